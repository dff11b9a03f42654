//! The wire format of the plugin contract is written once in Rust (crate
//! `sandgen-wire`, used by the host and the Rust guest SDK); the Python and
//! JavaScript helpers implement it again. These tests hold every guest
//! implementation to it: the same cases, written by each, must be exactly
//! what `sandgen-wire` writes, in both encodings, so that none can drift.

use sandgen::Encoding;
use serde_json::{Value, json};

use crate::languages::fixture;
use crate::util::{Fixture, Lang, artifacts, plugin};

/// The cases every implementation's `kinds` generator yields first, in this
/// order; after them come one language-specific item and the bytes 0, 255.
fn cases() -> Vec<Value> {
    vec![
        json!(7),
        json!(-3),
        json!(1.5),
        json!("hé"),
        json!(true),
        json!(null),
        json!([1, 2, 3]),
        json!({"a": 1}),
    ]
}

/// Every guest implementation of the wire format: the Rust SDK, then each
/// helper language.
fn implementations() -> Vec<(String, Fixture)> {
    let mut all = vec![("rust".to_owned(), plugin(artifacts::FIXTURE_KINDS))];
    all.extend(Lang::ALL.map(|lang| (format!("{lang:?}"), fixture(lang))));
    all
}

/// The raw items of one pass of `kinds`.
fn kinds(fixture: &Fixture, encoding: Encoding) -> Vec<Vec<u8>> {
    let iterable = fixture
        .generator("kinds")
        .encoding(encoding)
        .build()
        .unwrap();
    let mut pass = iterable.iter_raw().unwrap();
    let mut items = Vec::new();
    while let Some(item) = pass.next_item() {
        items.push(item.unwrap().to_vec());
    }
    items
}

both_isolations!(every_guest_writes_bincode_as_the_wire_crate_does);
fn every_guest_writes_bincode_as_the_wire_crate_does() {
    let bytes = Encoding::Bincode
        .encode(&serde_bytes::ByteBuf::from(vec![0u8, 255]))
        .unwrap();
    for (name, fixture) in implementations() {
        let items = kinds(&fixture, Encoding::Bincode);
        assert_eq!(items.len(), cases().len() + 2, "{name}");
        for (item, case) in items.iter().zip(cases()) {
            assert_eq!(
                *item,
                sandgen_wire::bincode_of_json(&case).unwrap(),
                "{name}: {case}"
            );
        }
        assert_eq!(items.last(), Some(&bytes), "{name}: bytes");
    }
}

both_isolations!(every_guest_writes_json_as_the_wire_crate_reads_it);
fn every_guest_writes_json_as_the_wire_crate_reads_it() {
    for (name, fixture) in implementations() {
        let items = kinds(&fixture, Encoding::Json);
        assert_eq!(items.len(), cases().len() + 2, "{name}");
        for (item, case) in items.iter().zip(cases()) {
            let read: Value = Encoding::Json.decode(item).unwrap();
            assert_eq!(read, case, "{name}");
        }
        let bytes: Value = Encoding::Json.decode(items.last().unwrap()).unwrap();
        assert_eq!(bytes, json!([0, 255]), "{name}: bytes");
    }
}
