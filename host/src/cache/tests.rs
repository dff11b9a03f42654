use super::*;

/// A component with no imports or exports: the smallest there is.
const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

/// Compiles the empty component in this process.
fn compile(engine: &wasmtime::Engine) -> impl FnOnce(&Source) -> Result<Artifact, Error> {
    move |source| {
        crate::compile::in_process(engine, "empty", &source.bytes()?).map(Artifact::Component)
    }
}

/// Replaces a cache file by renaming a new one over it (as the cache
/// does: never in place, as a mapped file must not shrink).
fn replace(path: &Path, contents: &[u8]) {
    let aside = path.with_extension("replacing");
    std::fs::write(&aside, contents).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

fn empty() -> Source {
    Source::Bytes(EMPTY_COMPONENT.into())
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sandgen-cache-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn second_load_comes_from_the_file_and_corruption_is_caught() {
    let engine = wasmtime::Engine::default();
    let dir = temp_dir("roundtrip");
    let cache = Cache::new(dir.clone());
    let first = cache
        .load_or_compile(&engine, &empty(), compile(&engine))
        .unwrap();
    let entry = first.entry.expect("stored");
    let file = entry.path.clone();
    assert!(load(&engine, &entry).is_ok());

    // Flip one byte of the payload: the checksum catches it, and the
    // next load recompiles and repairs the entry.
    let mut data = std::fs::read(&file).unwrap();
    let last = data.len() - 1;
    data[last] ^= 0xff;
    replace(&file, &data);
    let err = load(&engine, &entry).err().unwrap();
    assert!(err.to_string().contains("checksum does not match"), "{err}");
    let again = cache
        .load_or_compile(&engine, &empty(), compile(&engine))
        .unwrap();
    assert_eq!(again.entry.as_ref(), Some(&entry));
    assert!(load(&engine, &entry).is_ok());

    // Not a compiled file at all.
    replace(&file, b"garbage");
    let err = load(&engine, &entry).err().unwrap();
    assert!(err.to_string().contains("checksum does not match"), "{err}");

    // A missing or damaged check file: the entry is not used.
    cache
        .load_or_compile(&engine, &empty(), compile(&engine))
        .unwrap();
    let check = entry.check_path();
    let mut record = std::fs::read(&check).unwrap();
    record[20] ^= 1;
    std::fs::write(&check, &record).unwrap();
    let err = load(&engine, &entry).err().unwrap();
    assert!(
        err.to_string().contains("check file is missing or damaged"),
        "{err}"
    );
    std::fs::remove_file(&check).unwrap();
    let err = load(&engine, &entry).err().unwrap();
    assert!(
        err.to_string().contains("check file is missing or damaged"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A compiled file that looks as it did when it was verified is not
/// read; one that does not (here: touched, same bytes) is verified by
/// its checksum, and its check file brought up to date.
#[test]
fn an_entry_is_verified_again_only_when_it_looks_changed() {
    let engine = wasmtime::Engine::default();
    let dir = temp_dir("identity");
    let cache = Cache::new(dir.clone());
    let entry = cache
        .load_or_compile(&engine, &empty(), compile(&engine))
        .unwrap()
        .entry
        .unwrap();
    let check = std::fs::read(entry.check_path()).unwrap();
    assert!(load(&engine, &entry).is_ok());
    assert_eq!(
        std::fs::read(entry.check_path()).unwrap(),
        check,
        "rewritten"
    );
    let file = File::options().write(true).open(&entry.path).unwrap();
    file.set_modified(std::time::SystemTime::UNIX_EPOCH)
        .unwrap();
    drop(file);
    assert!(load(&engine, &entry).is_ok());
    let updated = std::fs::read(entry.check_path()).unwrap();
    assert_ne!(updated, check, "the new identity is recorded");
    assert!(load(&engine, &entry).is_ok());
    assert_eq!(std::fs::read(entry.check_path()).unwrap(), updated);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The source of the plugin file at `path`, as `Engine::load` makes it.
fn source_of(path: &Path) -> Source {
    let file = File::open(path).unwrap();
    let fingerprint = Fingerprint::of(&file).unwrap();
    Source::File {
        file: std::sync::Arc::new(file),
        path: path.to_owned(),
        fingerprint,
    }
}

/// Two components of the same size: a custom section named `a` or `b`.
fn with_section(name: u8) -> Vec<u8> {
    [EMPTY_COMPONENT, &[0, 2, 1, name]].concat()
}

/// A plugin file seen before is found by its fingerprint, without being
/// hashed or compiled again (here what would be read is an empty file); a
/// file rewritten in place with the same size and modification time has
/// another fingerprint, so its new contents are compiled.
#[test]
fn plugin_files_are_found_by_contents_and_rewrites_are_seen() {
    let engine = wasmtime::Engine::default();
    let dir = temp_dir("sources");
    let cache = Cache::new(dir.clone());
    std::fs::create_dir_all(&dir).unwrap();
    let plugin = dir.join("plugin.wasm");
    std::fs::write(&plugin, with_section(b'a')).unwrap();
    let first = source_of(&plugin);
    let a = cache
        .load_or_compile(&engine, &first, compile(&engine))
        .unwrap()
        .entry
        .unwrap();
    let Source::File { fingerprint, .. } = first else {
        unreachable!()
    };
    std::fs::write(dir.join("empty"), b"").unwrap();
    let unread = Source::File {
        file: std::sync::Arc::new(File::open(dir.join("empty")).unwrap()),
        path: dir.join("no-such-file.wasm"),
        fingerprint,
    };
    let compiled = cache.load_or_compile(&engine, &unread, |_| panic!("compiled"));
    assert_eq!(compiled.unwrap().entry, Some(a.clone()));

    let modified = std::fs::metadata(&plugin).unwrap().modified().unwrap();
    let mut file = File::options().write(true).open(&plugin).unwrap();
    file.write_all(&with_section(b'b')).unwrap();
    file.set_modified(modified).unwrap();
    drop(file);
    let meta = std::fs::metadata(&plugin).unwrap();
    assert_eq!((meta.len(), meta.modified().unwrap()), (12, modified));
    let b = cache
        .load_or_compile(&engine, &source_of(&plugin), compile(&engine))
        .unwrap()
        .entry
        .unwrap();
    assert_ne!(a, b, "the rewritten file was taken for the old one");
    assert_eq!(
        b.key,
        key(&engine, &Sha256::digest(with_section(b'b')).into())
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A source record is sealed to the contents it was made for: one plugin's
/// record copied over another's is refused, and the other plugin gets its
/// own compiled code.
#[test]
fn a_source_record_copied_over_another_is_refused() {
    let engine = wasmtime::Engine::default();
    let dir = temp_dir("copied-record");
    let cache = Cache::new(dir.clone());
    std::fs::create_dir_all(&dir).unwrap();
    let records = || -> std::collections::BTreeSet<PathBuf> {
        std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "source"))
            .collect()
    };
    let mut entries = Vec::new();
    let mut made = Vec::new();
    for name in [b'a', b'b'] {
        let plugin = dir.join(format!("{}.wasm", name as char));
        std::fs::write(&plugin, with_section(name)).unwrap();
        let before = records();
        let compiled = cache
            .load_or_compile(&engine, &source_of(&plugin), compile(&engine))
            .unwrap();
        entries.push(compiled.entry.unwrap());
        let new: Vec<PathBuf> = records().difference(&before).cloned().collect();
        assert_eq!(new.len(), 1, "one record for {}", name as char);
        made.push((plugin, new[0].clone()));
    }
    // A's record copied over B's.
    std::fs::copy(&made[0].1, &made[1].1).unwrap();
    let b = cache
        .load_or_compile(&engine, &source_of(&made[1].0), compile(&engine))
        .unwrap();
    assert_eq!(b.entry.as_ref(), Some(&entries[1]), "B ran A's code");
    assert_ne!(entries[0], entries[1]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn concurrent_writers_leave_a_valid_entry() {
    let engine = wasmtime::Engine::default();
    let dir = temp_dir("concurrent");
    let cache = Cache::new(dir.clone());
    let entries: Vec<Entry> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    cache
                        .load_or_compile(&engine, &empty(), compile(&engine))
                        .unwrap()
                        .entry
                })
            })
            .collect();
        workers
            .into_iter()
            .filter_map(|w| w.join().unwrap())
            .collect()
    });
    assert!(!entries.is_empty());
    for entry in &entries {
        assert!(load(&engine, entry).is_ok());
    }
    // Only the entry itself (compiled file and check file) is left: no
    // partial files.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn keys_depend_on_engine_settings_and_bytes() {
    let plain = wasmtime::Engine::default();
    let mut config = wasmtime::Config::new();
    config.consume_fuel(true);
    let fueled = wasmtime::Engine::new(&config).unwrap();
    let digest = |bytes: &[u8]| -> ContentDigest { Sha256::digest(bytes).into() };
    let empty = digest(EMPTY_COMPONENT);
    assert_ne!(key(&plain, &empty), key(&fueled, &empty));
    assert_ne!(key(&plain, &empty), key(&plain, &digest(b"other")));
    assert_eq!(key(&plain, &empty), key(&plain, &empty));
}

#[test]
fn unwritable_cache_still_compiles() {
    let engine = wasmtime::Engine::default();
    let cache = Cache::new(PathBuf::from("/proc/definitely/not/writable"));
    let compiled = cache
        .load_or_compile(&engine, &empty(), compile(&engine))
        .unwrap();
    assert!(compiled.entry.is_none());
}

/// A file's fingerprint is the same whether its blocks are hashed on
/// several threads (`Fingerprint::of`) or its bytes fed in order (as a
/// compilation reads them), at every size around the block's, and changes
/// with any byte.
#[test]
fn a_fingerprint_is_the_same_however_the_file_is_read() {
    let dir = temp_dir("fingerprints");
    std::fs::create_dir_all(&dir).unwrap();
    let block = super::source::BLOCK as usize;
    for len in [0, 1, 4095, block - 1, block, block + 1, 3 * block + 5] {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
        let path = dir.join(format!("{len}.bin"));
        std::fs::write(&path, &bytes).unwrap();
        let of = Fingerprint::of(&File::open(&path).unwrap()).unwrap();
        for chunk in [1 << 20, 4093] {
            let mut fed = super::source::FingerprintHasher::new();
            for piece in bytes.chunks(chunk) {
                fed.update(piece);
            }
            assert_eq!(fed.finish(), of, "{len} bytes in chunks of {chunk}");
        }
        assert_eq!(of.len, len as u64);
        if len > 0 {
            let mut changed = bytes.clone();
            changed[len / 2] ^= 1;
            std::fs::write(&path, &changed).unwrap();
            assert_ne!(Fingerprint::of(&File::open(&path).unwrap()).unwrap(), of);
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A plugin file written after it was loaded is not compiled: reading it
/// for a compilation (here, to compile it in this process) finds other
/// contents than its fingerprint, and says so.
#[test]
fn a_plugin_written_after_it_was_loaded_is_not_compiled() {
    let engine = wasmtime::Engine::default();
    let dir = temp_dir("written-after");
    std::fs::create_dir_all(&dir).unwrap();
    let plugin = dir.join("plugin.wasm");
    std::fs::write(&plugin, with_section(b'a')).unwrap();
    let source = source_of(&plugin);
    std::fs::write(&plugin, with_section(b'b')).unwrap();
    let error = Cache::new(dir.join("cache"))
        .load_or_compile(&engine, &source, compile(&engine))
        .err()
        .expect("refused");
    assert_eq!(error.kind(), ErrorKind::Load);
    assert!(
        error
            .to_string()
            .ends_with("it was written after it was loaded; load it again"),
        "{error}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
