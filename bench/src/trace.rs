//! Editing traces from `data/editing-traces/` and an editor that
//! replays one into a yrs document, producing real Yjs updates.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;
use yrs::{Doc, GetString, OffsetKind, Options, ReadTxn, StateVector, Text, TextRef, Transact};

/// One patch: position and delete count in Unicode code points, then text.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Patch(pub u32, pub u32, pub String);

#[derive(Deserialize)]
struct RawTxn {
    #[serde(default, alias = "timestamp")]
    time: Option<String>,
    patches: Vec<Patch>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTrace {
    #[serde(default)]
    start_content: String,
    end_content: String,
    txns: Vec<RawTxn>,
}

/// A sequential trace, flattened to keystroke-sized patches.
pub(crate) struct Trace {
    pub name: String,
    pub start: String,
    pub end: String,
    pub patches: Vec<Patch>,
    /// Milliseconds since the trace's first transaction, per patch (when the
    /// trace has timestamps).
    pub times_ms: Option<Vec<u64>>,
    /// Every inserted character is ASCII: code points equal UTF-16 units.
    pub ascii: bool,
}

pub(crate) fn traces_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/editing-traces")
}

impl Trace {
    pub(crate) fn load(name: &str) -> Result<Trace> {
        let path = traces_dir().join(format!("{name}.json.gz"));
        let file = std::fs::File::open(&path).with_context(|| {
            format!(
                "cannot open the editing trace {}: it ships in data/editing-traces",
                path.display()
            )
        })?;
        let raw: RawTrace = serde_json::from_reader(flate2::read::GzDecoder::new(file))
            .with_context(|| format!("cannot parse {}", path.display()))?;
        let mut patches = Vec::new();
        let mut times = Vec::new();
        let mut first: Option<i64> = None;
        let mut timed = true;
        for txn in raw.txns {
            let at = txn.time.as_deref().and_then(parse_millis);
            if at.is_none() {
                timed = false;
            }
            let at = at.unwrap_or(0);
            let base = *first.get_or_insert(at);
            for patch in txn.patches {
                times.push((at - base).max(0) as u64);
                patches.push(patch);
            }
        }
        let ascii = raw.start_content.is_ascii() && patches.iter().all(|p| p.2.is_ascii());
        Ok(Trace {
            name: name.to_owned(),
            start: raw.start_content,
            end: raw.end_content,
            patches,
            times_ms: timed.then_some(times),
            ascii,
        })
    }
}

/// Parses the ISO-8601 timestamps the traces use, to Unix milliseconds.
fn parse_millis(text: &str) -> Option<i64> {
    chrono_like(text)
}

fn chrono_like(text: &str) -> Option<i64> {
    // YYYY-MM-DDTHH:MM:SS(.fff)?(Z|+00:00)
    let (date, time) = text.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let time = time.trim_end_matches('Z');
    let time = time.split('+').next()?;
    let mut t = time.split(':');
    let (h, min) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let sec: f64 = t.next()?.parse().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3600 + min * 60) as f64 * 1000.0 + sec * 1000.0) as i64)
}

/// An editor: a yrs document whose text `name` replays a trace.
pub(crate) struct Editor {
    pub doc: Doc,
    pub text: TextRef,
    next: usize,
}

/// A local edit ready to send.
pub(crate) struct Edit {
    pub update: Vec<u8>,
    /// The clocks of the blocks this edit created (`start..end`), or `None`
    /// for a pure deletion (which creates no block).
    pub clocks: Option<(u64, u64)>,
}

impl Editor {
    pub(crate) fn new(client_id: u64, text_name: &str) -> Self {
        let doc = Doc::with_options(Options {
            client_id: yrs::ClientID::new(client_id),
            offset_kind: OffsetKind::Utf16,
            ..Options::default()
        });
        let text = doc.get_or_insert_text(text_name);
        Editor { doc, text, next: 0 }
    }

    /// Applies the trace's next patch (starting over with a cleared text at
    /// the end of the trace) and returns the update it produced.
    pub(crate) fn step(&mut self, trace: &Trace) -> Edit {
        if self.next >= trace.patches.len() {
            self.next = 0;
            let mut txn = self.doc.transact_mut();
            let len = self.text.len(&txn);
            self.text.remove_range(&mut txn, 0, len);
        }
        let patch = &trace.patches[self.next];
        self.next += 1;
        let mut txn = self.doc.transact_mut();
        let (pos, del) = if trace.ascii {
            (patch.0, patch.1)
        } else {
            let current = self.text.get_string(&txn);
            utf16_span(&current, patch.0 as usize, patch.1 as usize)
        };
        let len = self.text.len(&txn);
        let pos = pos.min(len);
        let del = del.min(len - pos);
        if del > 0 {
            self.text.remove_range(&mut txn, pos, del);
        }
        if !patch.2.is_empty() {
            self.text.insert(&mut txn, pos, &patch.2);
        }
        let client = self.doc.client_id();
        let before = u64::from(txn.before_state().get(&client));
        // `after_state` is only filled in on commit; read the live one.
        let after = u64::from(txn.state_vector().get(&client));
        let update = txn.encode_update_v1();
        Edit {
            update,
            clocks: (after > before).then_some((before, after)),
        }
    }

    /// Sets the trace position (editors sharing a trace start apart).
    pub(crate) fn skip_to(&mut self, index: usize, trace: &Trace) {
        self.next = index % trace.patches.len().max(1);
    }

    /// The whole document as one update.
    pub(crate) fn full_update(&self) -> Vec<u8> {
        self.doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default())
    }
}

/// Converts a code-point span of `text` to UTF-16 units.
fn utf16_span(text: &str, pos: usize, del: usize) -> (u32, u32) {
    let mut units = 0usize;
    let mut start = None;
    for (i, c) in text.chars().enumerate() {
        if i == pos {
            start = Some(units);
        }
        if i == pos + del {
            return (
                start.unwrap_or(units) as u32,
                (units - start.unwrap_or(units)) as u32,
            );
        }
        units += c.len_utf16();
    }
    let start = start.unwrap_or(units);
    (start as u32, (units - start) as u32)
}

/// Replays a whole trace into one document (used to build the large join
/// document) and checks the result against the trace's end content.
pub(crate) fn replay_whole(trace: &Trace) -> Result<Vec<u8>> {
    let mut editor = Editor::new(1, crate::BODY_TEXT);
    {
        let mut txn = editor.doc.transact_mut();
        editor.text.insert(&mut txn, 0, &trace.start);
    }
    for _ in 0..trace.patches.len() {
        editor.step(trace);
    }
    let text = editor.text.get_string(&editor.doc.transact());
    anyhow::ensure!(
        text == trace.end,
        "replaying {} did not give its end content",
        trace.name
    );
    Ok(editor.full_update())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse() {
        let a = parse_millis("2021-04-19T06:06:58.219Z").unwrap();
        let b = parse_millis("2021-04-19T06:06:58.513Z").unwrap();
        assert_eq!(b - a, 294);
        let c = parse_millis("2023-11-22T03:57:33+00:00").unwrap();
        let d = parse_millis("2023-11-22T03:58:32+00:00").unwrap();
        assert_eq!(d - c, 59_000);
        assert_eq!(parse_millis("1970-01-01T00:00:01Z"), Some(1000));
    }

    #[test]
    fn edits_report_the_clocks_they_created() {
        let trace = Trace {
            name: "t".into(),
            start: String::new(),
            end: String::new(),
            patches: vec![
                Patch(0, 0, "ab".into()),
                Patch(1, 1, "".into()),
                Patch(1, 0, "😀".into()),
            ],
            times_ms: None,
            ascii: false,
        };
        let mut editor = Editor::new(9, "t");
        let clocks: Vec<_> = (0..3).map(|_| editor.step(&trace).clocks).collect();
        assert_eq!(clocks, vec![Some((0, 2)), None, Some((2, 4))]);
    }

    #[test]
    fn utf16_spans() {
        assert_eq!(utf16_span("a😀b", 1, 1), (1, 2));
        assert_eq!(utf16_span("a😀b", 2, 1), (3, 1));
        assert_eq!(utf16_span("ab", 2, 0), (2, 0));
    }

    #[test]
    fn a_non_ascii_trace_replays_by_code_points() {
        let patches = vec![
            Patch(0, 0, "héllo".into()),
            Patch(5, 0, " 😀 wörld".into()),
            Patch(6, 1, "🎉".into()),
            Patch(1, 1, "e".into()),
            Patch(9, 2, "".into()),
            Patch(0, 0, "→".into()),
        ];
        let mut mirror: Vec<char> = Vec::new();
        for patch in &patches {
            let (pos, del) = (patch.0 as usize, patch.1 as usize);
            mirror.splice(pos..pos + del, patch.2.chars());
        }
        let end: String = mirror.into_iter().collect();
        let trace = Trace {
            name: "synthetic".into(),
            start: String::new(),
            end: end.clone(),
            patches,
            times_ms: None,
            ascii: false,
        };
        let mut editor = Editor::new(3, "t");
        for _ in 0..trace.patches.len() {
            editor.step(&trace);
        }
        assert_eq!(editor.text.get_string(&editor.doc.transact()), end);
        assert_eq!(end, "→hello 🎉 wld");
    }
}
