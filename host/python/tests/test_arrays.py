"""Array items into numpy (design section 13): every dtype, arrays nested in
tuples, dataclasses and dicts, writable arrays that own their memory,
`batch_size` stacking, and the errors of bad arrays and ragged batches."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import numpy.typing as npt
import pytest

import sandgen

ALL_DTYPES = [
    "bool",
    "uint8",
    "int8",
    "uint16",
    "int16",
    "uint32",
    "int32",
    "uint64",
    "int64",
    "float16",
    "float32",
    "float64",
]


def ramp(dtype: str, shape: tuple[int, ...], k: int) -> np.ndarray:
    """Item `k` of the fixture's `ramp`: elements `k * 1000 + i` as the
    dtype holds them (src/lib.rs of tests/fixtures/arrays)."""
    v = k * 1000 + np.arange(int(np.prod(shape)), dtype=np.uint64)
    if dtype == "bool":
        out = (v % 2).astype(np.bool_)
    elif dtype == "float16":
        out = (v % 0x3C00).astype(np.uint16).view(np.float16)
    elif dtype.startswith("float"):
        out = v.astype(dtype)
    else:
        out = v.astype(np.uint64).astype(dtype.replace("int", "uint").replace("uuint", "uint"))
        out = out.view(dtype)
    return out.reshape(shape)


@pytest.fixture(scope="module")
def arrays(load) -> sandgen.Plugin:
    return load("FIXTURE_ARRAYS")


@pytest.mark.parametrize("encoding", ["bincode", "json"])
def test_every_dtype_arrives_as_a_writable_array_of_its_own(
    arrays: sandgen.Plugin, encoding: str
) -> None:
    for dtype in ALL_DTYPES:
        args = {"n": 3, "dtype": dtype, "shape": [2, 3]}
        items = list(arrays.iterable("ramp", args, encoding=encoding, item_type=np.ndarray))
        assert len(items) == 3
        for k, item in enumerate(items):
            assert isinstance(item, np.ndarray)
            assert item.dtype == np.dtype(dtype), dtype
            assert item.shape == (2, 3)
            np.testing.assert_array_equal(item, ramp(dtype, (2, 3), k), err_msg=dtype)
            # Writable, and owning its memory: not a view of a buffer that
            # sandgen reuses.
            assert item.flags.writeable and item.flags.c_contiguous
            item[0, 0] = item[0, 1]
        # Each item has memory of its own.
        assert not np.shares_memory(items[0], items[1])


def test_every_sdk_writes_arrays_a_host_reads_alike(load, isolation: str) -> None:
    expected = [
        np.array([[0.5, 1, 1.5], [2, 2.5, 3]], dtype=np.float32),
        np.array([0, 1, 254, 255], dtype=np.uint8),
        np.array([True, False, True]),
        np.array([[-1, 2], [-3, 4]], dtype=np.int64),
        np.array([1.0, -2.0], dtype=np.float16),
    ]
    for name in ["FIXTURE_ARRAYS", "FIXTURE_PYTHON", "FIXTURE_JS"]:
        for encoding in ["bincode", "json"]:
            iterable = load(name).iterable(
                "arrays", encoding=encoding, item_type=np.ndarray, isolation=isolation
            )
            with iterable:
                # The first five cases are arrays; the sixth is a pair.
                got = list(itertools.islice(iterable, 5))
            for want, have in zip(expected, got, strict=True):
                assert have.dtype == want.dtype, name
                np.testing.assert_array_equal(have, want, err_msg=f"{name} in {encoding}")


def test_arrays_nest_in_tuples_dataclasses_and_dicts(arrays: sandgen.Plugin) -> None:
    args = {"n": 4, "dtype": "float32", "shape": [3, 2]}
    pairs = list(
        arrays.iterable("labelled", args, encoding="bincode", item_type=tuple[np.ndarray, int])
    )
    assert [label for _, label in pairs] == [0, 1, 2, 3]
    for k, (image, _) in enumerate(pairs):
        np.testing.assert_array_equal(image, ramp("float32", (3, 2), k))

    @dataclasses.dataclass
    class Sample:
        image: npt.NDArray[np.uint8]
        label: sandgen.i64
        name: str
        weights: np.ndarray

    for encoding in ["bincode", "json"]:
        samples = list(
            arrays.iterable(
                "samples",
                {"n": 3, "dtype": "uint8", "shape": [2, 2]},
                encoding=encoding,
                item_type=Sample,
            )
        )
        assert [(s.label, s.name) for s in samples] == [(-2, "s0"), (-1, "s1"), (0, "s2")]
        np.testing.assert_array_equal(samples[2].image, ramp("uint8", (2, 2), 2))
        np.testing.assert_array_equal(samples[1].weights, [1.0, 0.5])
        named = list(
            arrays.iterable(
                "named",
                {"n": 2, "dtype": "int16", "shape": [3]},
                encoding=encoding,
                item_type=dict[str, np.ndarray],
            )
        )
        assert [sorted(d) for d in named] == [["image", "mask"], ["image", "mask"]]
        np.testing.assert_array_equal(named[1]["image"], ramp("int16", (3,), 1))
        np.testing.assert_array_equal(named[1]["mask"], [True, False, True])


@pytest.mark.parametrize("encoding", ["bincode", "json"])
def test_batches_stack_arrays_and_numbers_in_rust(
    arrays: sandgen.Plugin, encoding: str, isolation: str
) -> None:
    args = {"n": 10, "dtype": "uint8", "shape": [4, 4, 3]}

    def pairs(**options: object) -> list:
        return list(
            arrays.iterable(
                "labelled",
                args,
                encoding=encoding,
                item_type=tuple[np.ndarray, int],
                batch_size=4,
                isolation=isolation,
                **options,
            )
        )

    batches = pairs()
    assert [b[0].shape for b in batches] == [(4, 4, 4, 3), (4, 4, 4, 3), (2, 4, 4, 3)]
    for i, (images, labels) in enumerate(batches):
        assert images.dtype == np.uint8 and images.flags.writeable
        assert labels.dtype == np.int64
        np.testing.assert_array_equal(labels, np.arange(i * 4, min(i * 4 + 4, 10)))
        for j, k in enumerate(labels):
            np.testing.assert_array_equal(images[j], ramp("uint8", (4, 4, 3), int(k)))
    dropped = pairs(drop_last=True)
    assert [len(labels) for _, labels in dropped] == [4, 4]


def test_batches_stack_records_field_by_field(arrays: sandgen.Plugin) -> None:
    @dataclasses.dataclass
    class Sample:
        image: np.ndarray
        label: sandgen.i64
        name: str
        weights: np.ndarray

    first, second = arrays.iterable(
        "samples",
        {"n": 5, "dtype": "uint8", "shape": [2]},
        encoding="bincode",
        item_type=Sample,
        batch_size=3,
    )
    assert isinstance(first, Sample)
    np.testing.assert_array_equal(first.label, [-2, -1, 0])
    assert first.name == ["s0", "s1", "s2"]
    assert first.image.shape == (3, 2) and first.weights.shape == (3, 2)
    np.testing.assert_array_equal(second.weights, [[3.0, 0.5], [4.0, 0.5]])
    # JSON without item_type: dicts stack key by key, numbers into arrays.
    plain = list(
        arrays.iterable(
            "labelled", {"n": 3, "dtype": "uint8", "shape": [1]}, encoding="json", batch_size=3
        )
    )
    assert len(plain) == 1 and isinstance(plain[0], list)
    scalars = list(
        arrays.iterable("samples", {"n": 2, "dtype": "uint8", "shape": [1]}, batch_size=2)
    )
    np.testing.assert_array_equal(scalars[0]["label"], [-2, -1])
    assert scalars[0]["label"].dtype == np.int64


def test_a_ragged_batch_names_the_item_and_the_difference(arrays: sandgen.Plugin) -> None:
    args = {"n": 8, "dtype": "float32", "shape": [2, 3], "ragged_at": 5}
    iterable = arrays.iterable(
        "labelled", args, encoding="bincode", item_type=tuple[np.ndarray, int], batch_size=4
    )
    batches = []
    with pytest.raises(sandgen.InvalidInputError) as raised:
        for batch in iterable:
            batches.append(batch)
    # The first batch (items 0 to 3) arrives; item 5 does not stack on item 4.
    assert [labels.tolist() for _, labels in batches] == [[0, 1, 2, 3]]
    assert raised.value.kind == "invalid_input"
    assert str(raised.value) == (
        "cannot stack item 5 of generator labelled into a batch of 4: an array of float32 "
        "and shape [3, 3] at [0], where the batch's first item has an array of float32 and "
        "shape [2, 3]"
    )


def test_dicts_with_other_keys_do_not_stack(arrays: sandgen.Plugin) -> None:
    args = {"n": 4, "dtype": "uint8", "shape": [2], "renamed_at": 3}
    iterable = arrays.iterable(
        "named", args, encoding="bincode", item_type=dict[str, np.ndarray], batch_size=2
    )
    batches = []
    with pytest.raises(sandgen.InvalidInputError) as raised:
        for batch in iterable:
            batches.append(batch)
    assert [sorted(batch) for batch in batches] == [["image", "mask"]]
    np.testing.assert_array_equal(batches[0]["mask"], [[True, False], [True, False]])
    assert str(raised.value) == (
        "cannot stack item 3 of generator named into a batch of 2: a dict with the keys "
        '["image", "labels"], where the batch\'s first item has ["image", "mask"]'
    )


@pytest.mark.parametrize(
    ("case", "why"),
    [
        ("dtype", "an array: unknown dtype `complex64`: use one of bool, uint8, int8"),
        ("length", "an array: an array of dtype float32 and shape [4] holds 16 bytes, not 12"),
        ("bool", "an array: a bool array holds the byte 2 at element 1: bool elements are 0 or 1"),
    ],
)
@pytest.mark.parametrize("encoding", ["bincode", "json"])
def test_a_malformed_array_is_a_decode_error_naming_the_item(
    arrays: sandgen.Plugin, case: str, why: str, encoding: str
) -> None:
    got = []
    with pytest.raises(sandgen.DecodeError) as raised:
        for item in arrays.iterable("malformed", case, encoding=encoding, item_type=np.ndarray):
            got.append(item)
    assert [a.tolist() for a in got] == [[1.0]], "the good item before it arrives"
    assert str(raised.value).startswith(
        "cannot decode item 1 of generator malformed as item_type ndarray: "
    )
    if encoding == "json":
        why = "the item: " + why.removeprefix("an array: ")
    assert why in str(raised.value)


@pytest.mark.parametrize(
    ("case", "why"),
    [
        ("missing", 'the item: the array\'s field "data" is missing'),
        (
            "extra",
            'the item: an array record has no field "strides" (it has dtype, shape and data)',
        ),
        ("types", "the item.shape: expected a list of dimensions, found a string"),
    ],
)
def test_a_json_array_record_with_wrong_fields_names_the_field(
    arrays: sandgen.Plugin, case: str, why: str
) -> None:
    iterable = arrays.iterable("malformed", case, item_type=np.ndarray)
    with pytest.raises(sandgen.DecodeError) as raised:
        list(iterable)
    assert str(raised.value) == (
        f"cannot decode item 1 of generator malformed as item_type ndarray: {why}"
    )


def test_numbers_stack_to_the_type_that_holds_them_all(load) -> None:
    # `kinds` yields 7, -3, 1.5, "hé", True, None, ...: the first batch
    # widens from unsigned to signed to float; the second cannot stack a
    # bool on a string.
    iterable = load("FIXTURE_PYTHON").iterable("kinds", batch_size=3)
    batches = []
    with pytest.raises(sandgen.InvalidInputError) as raised:
        for batch in iterable:
            batches.append(batch)
    assert len(batches) == 1
    assert batches[0].dtype == np.float64
    assert batches[0].tolist() == [7.0, -3.0, 1.5]
    assert str(raised.value) == (
        "cannot stack item 4 of generator kinds into a batch of 3: a bool, where the "
        "batch's first item has a string, bytes, a list or None"
    )


def test_json_arrays_with_wrong_field_types_name_the_field(arrays: sandgen.Plugin) -> None:
    # The plugin's JSON record is right; read as a tuple it is not.
    iterable = arrays.iterable(
        "labelled",
        {"n": 1, "dtype": "uint8", "shape": [1]},
        item_type=tuple[np.ndarray, str],
    )
    with pytest.raises(sandgen.DecodeError) as raised:
        list(iterable)
    assert str(raised.value) == (
        "cannot decode item 0 of generator labelled as item_type tuple[numpy.ndarray, str]: "
        "the item[1]: expected a string, found an integer"
    )
    # A record that is not an array where item_type says one.
    iterable = arrays.iterable(
        "samples", {"n": 1, "dtype": "uint8", "shape": [1]}, item_type=dict[str, np.ndarray]
    )
    with pytest.raises(sandgen.DecodeError) as raised:
        list(iterable)
    assert str(raised.value).endswith(
        'the item["label"]: expected an array record {"dtype", "shape", "data"}, found an integer'
    )


def test_batch_options_are_checked(arrays: sandgen.Plugin) -> None:
    for bad, message in [
        ({"batch_size": 0}, "batch_size must be"),
        ({"batch_size": "8"}, "batch_size must be"),
        ({"drop_last": 1, "batch_size": 2}, "drop_last must be a bool"),
        ({"drop_last": True}, "drop_last=True needs a batch_size"),
    ]:
        with pytest.raises(sandgen.InvalidInputError, match=message):
            arrays.iterable("ramp", {"n": 1, "dtype": "uint8", "shape": [1]}, **bad)
