use super::*;

fn binding() -> Binding {
    Binding {
        plugin: "xxh3-128:00:1".into(),
        generator: "range".into(),
        encoding: "json".into(),
        args: digest([&b"1"[..]]),
        config: digest([&b""[..]]),
        seed: Some(3),
        drawn: None,
        workers: 2,
        in_order: true,
        sharding: "plugin".into(),
        shard: (0, 1),
    }
}

#[test]
fn every_field_of_a_binding_is_named_when_it_differs() {
    let saved = binding();
    assert_eq!(saved.difference(&binding()), None);
    type Change = fn(&mut Binding);
    let cases: [(Change, &str); 10] = [
        (
            |b| b.plugin = "xxh3-128:01:1".into(),
            "another plugin: xxh3-128:00:1",
        ),
        (
            |b| b.generator = "shuffle".into(),
            "generator \"range\", this iterable has \"shuffle\"",
        ),
        (
            |b| b.encoding = "bincode".into(),
            "encoding json, this iterable has bincode",
        ),
        (|b| b.args = digest([&b"2"[..]]), "other args"),
        (|b| b.config = digest([&b"x"[..]]), "another config"),
        (|b| b.seed = None, "seed 3, this iterable has no seed"),
        (|b| b.workers = 1, "workers: 2, this iterable has 1"),
        (
            |b| b.in_order = false,
            "items in order, this iterable has unordered",
        ),
        (
            |b| b.sharding = "items".into(),
            "sharding plugin, this iterable has items",
        ),
        (
            |b| b.shard = (1, 2),
            "as shard 0 of 1, this iterable is shard 1 of 2",
        ),
    ];
    for (change, words) in cases {
        let mut other = binding();
        change(&mut other);
        let why = saved.difference(&other).expect("a difference");
        assert!(why.contains(words), "{why}");
    }
    // The seed drawn for items sharding is the run's: taken, not compared.
    let mut drawn = binding();
    drawn.drawn = Some(9);
    assert_eq!(saved.difference(&drawn), None);
}

#[test]
fn digests_keep_the_parts_apart() {
    assert_ne!(digest([&b"ab"[..], b"c"]), digest([&b"a"[..], b"bc"]));
    assert_ne!(digest([&b""[..]]), digest(std::iter::empty::<&[u8]>()));
    assert_eq!(digest([&b"ab"[..]]).len(), 32);
}

#[test]
fn a_position_round_trips_and_its_parts_must_agree() {
    let position = Position::new(2, vec![5, 4], 1, binding());
    assert_eq!(Position::from_json(&position.to_json()).unwrap(), position);
    let bad = Position::new(2, vec![5], 0, binding());
    let error = bad.checked().unwrap_err();
    let words = "its parts disagree (the items of 1 workers in a run of 2, next worker 0)";
    assert!(error.to_string().contains(words), "{error}");
    let next = Position::new(0, vec![0, 0], 2, binding());
    assert!(next.checked().is_err(), "the next worker is one of them");
}
