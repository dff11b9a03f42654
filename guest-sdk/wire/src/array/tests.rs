//! The array record's wire form, both encodings, and its checks.

use super::*;
use crate::Encoding;

#[test]
fn bincode_is_the_string_the_shape_and_the_bytes() {
    let array = Array::from_slice(&[1u16, 0x0203], [2]).unwrap();
    let bytes = Encoding::Bincode.encode(&array).unwrap();
    assert_eq!(bytes, b"\x06uint16\x01\x02\x04\x01\x00\x03\x02");
}

#[test]
fn json_is_the_object_with_byte_values() {
    let array = Array::from_slice(&[true, false], [2, 1]).unwrap();
    let text = Encoding::Json.encode(&array).unwrap();
    assert_eq!(text, br#"{"dtype":"bool","shape":[2,1],"data":[1,0]}"#);
    let back: Array<'_> = Encoding::Json.decode_borrowed(&text).unwrap();
    assert_eq!(back, array);
    // Fields in any order in JSON.
    let other = br#"{"data":[1,0],"shape":[2,1],"dtype":"bool"}"#;
    assert_eq!(
        Encoding::Json.decode_borrowed::<Array<'_>>(other).unwrap(),
        array
    );
}

#[test]
fn every_dtype_round_trips_in_both_encodings() {
    for dtype in Dtype::ALL {
        let data: Vec<u8> = (0..dtype.size() as u8 * 6).map(|b| b % 2).collect();
        let array = Array::new(dtype, [3u64, 2], data.as_slice()).unwrap();
        for encoding in [Encoding::Bincode, Encoding::Json] {
            let bytes = encoding.encode(&array).unwrap();
            let back: Array<'_> = encoding.decode_borrowed(&bytes).unwrap();
            assert_eq!(back, array, "{dtype} in {encoding}");
            assert_eq!(back.is_borrowed(), encoding == Encoding::Bincode);
        }
    }
}

#[test]
fn parts_that_disagree_are_refused() {
    let e = Array::new(Dtype::Float32, [2u64, 3], vec![0u8; 20]).unwrap_err();
    assert_eq!(
        e.message(),
        "an array of dtype float32 and shape [2, 3] holds 24 bytes, not 20"
    );
    let e = Array::new(Dtype::Int64, [u64::MAX, 2], vec![]).unwrap_err();
    assert!(e.message().contains("holds more than memory bytes"), "{e}");
    let e = Array::new(Dtype::Bool, [3u64], vec![0, 1, 2]).unwrap_err();
    assert_eq!(
        e.message(),
        "a bool array holds the byte 2 at element 2: bool elements are 0 or 1"
    );
    assert!(Array::from_slice(&[1u8, 2, 3], [2]).is_err());
    assert_eq!(
        Array::from_slice(&[1u8], [1])
            .unwrap()
            .to_vec::<i8>()
            .unwrap_err()
            .message(),
        "the array holds uint8, not int8"
    );
}

#[test]
fn bad_records_name_what_was_expected() {
    let decode = |text: &str| {
        Encoding::Json
            .decode_borrowed::<Array<'_>>(text.as_bytes())
            .unwrap_err()
            .to_string()
    };
    let e = decode(r#"{"dtype":"complex64","shape":[1],"data":[0]}"#);
    assert!(
        e.contains("unknown dtype `complex64`: use one of bool, uint8"),
        "{e}"
    );
    // A plugin's name is shown cut and escaped.
    let long = format!("\\u001b[2J{}", "x".repeat(100));
    let e = decode(&format!(r#"{{"dtype":"{long}","shape":[1],"data":[0]}}"#));
    assert!(
        e.contains(&format!("unknown dtype `\\u{{1b}}[2J{}…`", "x".repeat(60))),
        "{e}"
    );
    let e = decode(r#"{"dtype":"uint8","dtype":"uint8","shape":[1],"data":[0]}"#);
    assert!(e.contains("duplicate field `dtype`"), "{e}");
    let e = decode(r#"{"dtype":"uint8","shape":"x","data":[0]}"#);
    assert!(e.contains("expected a sequence"), "{e}");
    let e = decode(r#"{"dtype":"uint8","shape":[1],"data":[256]}"#);
    assert!(e.contains("expected u8"), "{e}");
    let e = decode(r#"{"dtype":"uint8","shape":[2],"data":[1]}"#);
    assert!(e.contains("holds 2 bytes, not 1"), "{e}");
    let e = decode(r#"{"dtype":"uint8","shape":[1]}"#);
    assert!(e.contains("missing field `data`"), "{e}");
    let e = decode(r#"{"dtype":"uint8","shape":[1],"data":[1],"x":1}"#);
    assert!(e.contains("unknown field `x`"), "{e}");
    // bincode: the data's length prefix past the end.
    let mut bytes = Encoding::Bincode
        .encode(&Array::from_slice(&[1u8, 2], [2]).unwrap())
        .unwrap();
    bytes.pop();
    assert!(
        Encoding::Bincode
            .decode_borrowed::<Array<'_>>(&bytes)
            .is_err()
    );
}

/// `extend_from_le_bytes` appends exactly the elements `to_le_bytes`
/// wrote, after what the vector held, and ignores a trailing part element.
#[test]
fn elements_append_from_their_bytes() {
    fn check<T: Element + Copy + PartialEq + std::fmt::Debug>(held: T, elements: &[T]) {
        let mut bytes = T::to_le_bytes(elements).into_owned();
        let mut out = vec![held];
        T::extend_from_le_bytes(&mut out, &bytes);
        assert_eq!(out[0], held);
        assert_eq!(&out[1..], elements);
        if size_of::<T>() > 1 {
            bytes.push(0xff);
            let mut cut = Vec::new();
            T::extend_from_le_bytes(&mut cut, &bytes);
            assert_eq!(cut, elements, "a part element is not read");
        }
    }
    check(9u8, &[0, 1, 254, 255]);
    check(-9i8, &[-128, 0, 127]);
    check(9u16, &[0, 0x1234, u16::MAX]);
    check(-9i16, &[i16::MIN, -1, i16::MAX]);
    check(9u32, &[0, 0x1234_5678, u32::MAX]);
    check(-9i32, &[i32::MIN, -1, i32::MAX]);
    check(9u64, &[0, 0x1234_5678_9abc_def0, u64::MAX]);
    check(-9i64, &[i64::MIN, -1, i64::MAX]);
    check(9.5f32, &[0.5, -1.25, f32::MAX, f32::MIN_POSITIVE]);
    check(9.5f64, &[0.5, -1.25, f64::MAX, f64::MIN_POSITIVE]);
    check(true, &[false, true, true]);
}
