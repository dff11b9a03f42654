use super::*;

/// A component with no imports or exports: the smallest there is.
const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

/// Compiles the empty component in this process.
fn compile(engine: &wasmtime::Engine) -> impl FnOnce(&[u8]) -> Result<Artifact, Error> {
    move |bytes| crate::compile::in_process(engine, "empty", bytes).map(Artifact::Component)
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

/// A plugin file seen before (and settled: last changed long enough
/// ago) is found by its identity without being read (here what would be
/// read is an empty file); a file rewritten in place with the same size
/// and modification time has another identity (its change time moved),
/// so its new contents are compiled.
#[test]
fn plugin_files_are_found_by_identity_and_rewrites_are_seen() {
    let engine = wasmtime::Engine::default();
    let dir = temp_dir("sources");
    let mut cache = Cache::new(dir.clone());
    cache.settled_after = std::time::Duration::ZERO;
    std::fs::create_dir_all(&dir).unwrap();
    // Two components of the same size: a custom section named `a` or `b`.
    let plugin = dir.join("plugin.wasm");
    let with_section = |name: u8| [EMPTY_COMPONENT, &[0, 2, 1, name]].concat();
    std::fs::write(&plugin, with_section(b'a')).unwrap();
    let source_of = |path: &Path| {
        let file = File::open(path).unwrap();
        let identity = Identity::of(&file.metadata().unwrap()).unwrap();
        Source::File {
            file: std::sync::Arc::new(file),
            path: path.to_owned(),
            identity,
        }
    };
    let first = source_of(&plugin);
    let a = cache
        .load_or_compile(&engine, &first, compile(&engine))
        .unwrap()
        .entry
        .unwrap();
    let Source::File { identity, .. } = first else {
        unreachable!()
    };
    std::fs::write(dir.join("empty"), b"").unwrap();
    let unread = Source::File {
        file: std::sync::Arc::new(File::open(dir.join("empty")).unwrap()),
        path: dir.join("no-such-file.wasm"),
        identity,
    };
    let compiled = cache.load_or_compile(&engine, &unread, |_| panic!("compiled"));
    assert_eq!(compiled.unwrap().entry, Some(a.clone()));

    let modified = std::fs::metadata(&plugin).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
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
    assert_eq!(b.key, key(&engine, &with_section(b'b')));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A plugin file changed just now is not found by its identity: it
/// could be written again within the same tick of the clock that stamps
/// its change time. It is read (and hashed) on every load until it has
/// settled.
#[test]
fn a_fresh_plugin_file_is_not_recorded() {
    let engine = wasmtime::Engine::default();
    let dir = temp_dir("fresh");
    let cache = Cache::new(dir.clone());
    std::fs::create_dir_all(&dir).unwrap();
    let plugin = dir.join("plugin.wasm");
    std::fs::write(&plugin, EMPTY_COMPONENT).unwrap();
    let file = File::open(&plugin).unwrap();
    let identity = Identity::of(&file.metadata().unwrap()).unwrap();
    let source = Source::File {
        file: std::sync::Arc::new(file),
        path: plugin,
        identity,
    };
    assert!(!settled(&identity, SETTLED));
    cache
        .load_or_compile(&engine, &source, compile(&engine))
        .unwrap();
    let records = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "source")
        })
        .count();
    assert_eq!(records, 0);
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
    assert_ne!(key(&plain, EMPTY_COMPONENT), key(&fueled, EMPTY_COMPONENT));
    assert_ne!(key(&plain, EMPTY_COMPONENT), key(&plain, b"other"));
    assert_eq!(key(&plain, EMPTY_COMPONENT), key(&plain, EMPTY_COMPONENT));
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
