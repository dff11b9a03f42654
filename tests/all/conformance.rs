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
    raw_items(fixture, "kinds", encoding)
}

/// The raw items of one pass of `generator`.
fn raw_items(fixture: &Fixture, generator: &str, encoding: Encoding) -> Vec<Vec<u8>> {
    let iterable = fixture
        .generator(generator)
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

/// The array items every implementation's `arrays` generator yields, as
/// the wire crate writes them (design section 13's record).
fn array_cases(encoding: Encoding) -> Vec<Vec<u8>> {
    use sandgen::{Array, Dtype};
    let f32s = Array::from_slice(&[0.5f32, 1.0, 1.5, 2.0, 2.5, 3.0], [2, 3]).unwrap();
    let u8s = Array::from_slice(&[0u8, 1, 254, 255], [4]).unwrap();
    let bools = Array::from_slice(&[true, false, true], [3]).unwrap();
    let i64s = Array::from_slice(&[-1i64, 2, -3, 4], [2, 2]).unwrap();
    let half = Array::new(Dtype::Float16, [2], vec![0x00, 0x3c, 0x00, 0xc0]).unwrap();
    let empty = (Array::new(Dtype::Uint16, [0], vec![]).unwrap(), 7u64);
    let scalar = Array::from_slice(&[3.25f64], []).unwrap();
    let mut items: Vec<Vec<u8>> = [f32s, u8s, bools, i64s, half]
        .iter()
        .map(|array| encoding.encode(array).unwrap())
        .collect();
    items.push(encoding.encode(&empty).unwrap());
    items.push(encoding.encode(&scalar).unwrap());
    items
}

both_isolations!(every_guest_writes_arrays_as_the_wire_crate_does);
fn every_guest_writes_arrays_as_the_wire_crate_does() {
    let mut all = vec![("rust".to_owned(), plugin(artifacts::FIXTURE_ARRAYS))];
    all.extend(Lang::ALL.map(|lang| (format!("{lang:?}"), fixture(lang))));
    for (name, fixture) in all {
        for encoding in [Encoding::Bincode, Encoding::Json] {
            let items = raw_items(&fixture, "arrays", encoding);
            let expected = array_cases(encoding);
            assert_eq!(items.len(), expected.len(), "{name} in {encoding}");
            for (i, (item, case)) in items.iter().zip(&expected).enumerate() {
                assert_eq!(
                    String::from_utf8_lossy(item),
                    String::from_utf8_lossy(case),
                    "{name} in {encoding}: case {i}"
                );
            }
        }
    }
}
