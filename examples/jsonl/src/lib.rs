//! Example plugin: reads JSON Lines files and yields validated rows, projected
//! onto the fields asked for, re-reading the file on every pass. Several
//! workers share the rows: each yields every n-th non-empty line.
//!
//! Build: `cargo build --release --target wasm32-wasip2 -p example-jsonl`
//! Run:   `sandgen run target/wasm32-wasip2/release/example_jsonl.wasm rows --dir examples/data::/data --args '{"path": "/data/reviews.jsonl", "fields": ["id", "stars"]}'`

use std::fs::File;
use std::io::{BufRead, BufReader, Lines};

use sandgen_guest::{Error, Generator, export_plugin};
use serde::Deserialize;
use serde_json::{Map, Value};

#[derive(Deserialize)]
struct Args {
    /// The file, as the plugin sees it (grant its directory with `--dir`).
    path: String,
    /// The fields to keep, in this order; each row must have all of them.
    fields: Vec<String>,
    /// Skip rows whose `where_field` is not equal to `where_value`.
    #[serde(default)]
    where_field: Option<String>,
    #[serde(default)]
    where_value: Option<Value>,
}

struct Rows {
    args: Args,
}

impl Generator for Rows {
    const NAME: &'static str = "rows";
    const DESCRIPTION: &'static str = "yields the rows of a JSON Lines file as objects of `fields`, from {path, fields, where_field?, where_value?}";
    type Args = Args;
    type Item = Map<String, Value>;
    type Iter = RowIter;

    fn create(args: Args) -> Result<Self, Error> {
        if args.fields.is_empty() {
            return Err(Error::msg(
                "`fields` is empty: name at least one field to keep",
            ));
        }
        if args.where_field.is_some() != args.where_value.is_some() {
            return Err(Error::msg(
                "give both `where_field` and `where_value`, or neither",
            ));
        }
        Ok(Rows { args })
    }

    fn iter(&mut self) -> Result<RowIter, Error> {
        let file = File::open(&self.args.path)
            .map_err(|e| Error::msg(format!("cannot open {}: {e}", self.args.path)))?;
        Ok(RowIter {
            lines: BufReader::new(file).lines(),
            line: 0,
            rows: 0,
            worker: sandgen_guest::worker(),
            fields: self.args.fields.clone(),
            filter: self
                .args
                .where_field
                .clone()
                .zip(self.args.where_value.clone()),
        })
    }
}

/// One pass over the file.
struct RowIter {
    lines: Lines<BufReader<File>>,
    line: usize,
    /// Non-empty lines seen so far.
    rows: u64,
    /// Which share of the rows is this worker's: every `count`-th non-empty
    /// line from the `id`-th, so the iterable's workers read each row once.
    worker: sandgen_guest::Worker,
    fields: Vec<String>,
    filter: Option<(String, Value)>,
}

impl RowIter {
    fn row(&self, text: &str) -> Result<Option<Map<String, Value>>, String> {
        let line = self.line;
        let mut object = match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(object)) => object,
            Ok(_) => return Err(format!("line {line}: not a JSON object")),
            Err(e) => return Err(format!("line {line}: invalid JSON: {e}")),
        };
        if let Some((field, value)) = &self.filter
            && object.get(field) != Some(value)
        {
            return Ok(None);
        }
        let mut row = Map::new();
        for field in &self.fields {
            let value = object
                .remove(field)
                .ok_or_else(|| format!("line {line}: missing field `{field}`"))?;
            row.insert(field.clone(), value);
        }
        Ok(Some(row))
    }
}

impl Iterator for RowIter {
    type Item = Result<Map<String, Value>, String>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.line += 1;
            let text = match self.lines.next()? {
                Ok(text) => text,
                Err(e) => return Some(Err(format!("line {}: cannot read: {e}", self.line))),
            };
            if text.trim().is_empty() {
                continue;
            }
            self.rows += 1;
            if (self.rows - 1) % u64::from(self.worker.count) != u64::from(self.worker.id) {
                // Another worker's row, left unparsed.
                continue;
            }
            match self.row(&text) {
                Ok(Some(row)) => return Some(Ok(row)),
                Ok(None) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

export_plugin!(generators: [Rows]);
