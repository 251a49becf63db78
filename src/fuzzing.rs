//! Shared pieces of the fuzz targets (proptest): every decoder of data from the
//! network or from files gets arbitrary bytes and structure-aware mutations of
//! valid encodings, and must answer with a value or an error, never a panic.
//! Targets are the tests named `fuzz_*`; each runs a fixed number of cases
//! (`PROPTEST_CASES` overrides it), so the suite stays bounded in time.

use proptest::prelude::*;
use proptest::test_runner::Config;

/// Cases per target unless `PROPTEST_CASES` says otherwise: a few seconds each
/// on a debug build.
pub const CASES: u32 = 10_000;

pub fn config(cases: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    Config {
        cases,
        // CI must not write regression files into the source tree.
        failure_persistence: None,
        max_shrink_iters: 4096,
        ..Config::default()
    }
}

/// Tokens that make parsers take unusual paths: delimiters of JSON, TOML and
/// XML, huge and negative numbers, escapes, control characters.
const TOKENS: &[&str] = &[
    "\"",
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "=",
    "\n",
    "\r\n",
    "\\",
    "\\u0000",
    "\\ud800",
    "0",
    "-1",
    "1e309",
    "18446744073709551616",
    "99999999999999999999999",
    "null",
    "true",
    "[[",
    "]]",
    "<",
    ">",
    "</",
    "/>",
    "&amp;",
    "&#0;",
    "<!--",
    "\u{0}",
    "\u{1b}[2J",
    "\u{feff}",
    "é",
    "𝕏",
    "ffffffffffffffff",
    "\r\n\r\n",
    "0\r\n\r\n",
];

#[derive(Debug, Clone)]
pub enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Truncate(usize),
    /// Copy a slice of the input somewhere else in it (repeats fields, nests).
    Duplicate(usize, usize, usize),
    Token(usize, &'static str),
    /// Put a token in place of a few bytes (a number, a delimiter).
    Replace(usize, usize, &'static str),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Delete),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), any::<usize>(), any::<usize>())
            .prop_map(|(a, n, at)| Mutation::Duplicate(a, n, at)),
        (any::<usize>(), proptest::sample::select(TOKENS)).prop_map(|(i, t)| Mutation::Token(i, t)),
        (any::<usize>(), 1..4usize, proptest::sample::select(TOKENS))
            .prop_map(|(i, n, t)| Mutation::Replace(i, n, t)),
    ]
}

pub fn apply(mut data: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = data.len();
        let at = |i: usize| if len == 0 { 0 } else { i % (len + 1) };
        match *m {
            Mutation::Flip(i, b) if len > 0 => data[i % len] ^= b.max(1),
            Mutation::Insert(i, b) => data.insert(at(i), b),
            Mutation::Delete(i) if len > 0 => {
                data.remove(i % len);
            }
            Mutation::Truncate(i) => data.truncate(at(i)),
            Mutation::Duplicate(start, n, to) if len > 0 => {
                let start = start % len;
                let end = start + n % (len - start).min(64) + 1;
                let piece = data[start..end.min(len)].to_vec();
                let to = at(to);
                data.splice(to..to, piece);
            }
            Mutation::Token(i, t) => {
                let i = at(i);
                data.splice(i..i, t.bytes());
            }
            Mutation::Replace(i, n, t) => {
                let i = at(i);
                let end = (i + n).min(len);
                data.splice(i..end, t.bytes());
            }
            _ => {}
        }
    }
    data
}

/// Arbitrary bytes, or one of `valid` with a few mutations.
pub fn bytes_like(valid: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let n = valid.len();
    prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..512),
        3 => (0..n, proptest::collection::vec(mutation(), 1..8))
            .prop_map(move |(i, m)| apply(valid[i].clone(), &m)),
    ]
}

/// Values put in place of a field of a JSON document: out of range, of the
/// wrong type, huge, negative, empty, with control characters.
const JSON_VALUES: &[&str] = &[
    "-1",
    "0",
    "-0.5",
    "101",
    "1e308",
    "-1e308",
    "18446744073709551615",
    "-9223372036854775808",
    "0.000001",
    "\"\"",
    "\"\\u001b[2J\\n2nd line\"",
    "null",
    "true",
    "[]",
    "{}",
    "[1,2,3]",
];

/// Every node of a JSON document, as a JSON pointer.
fn pointers(v: &serde_json::Value, at: String, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, child) in map {
                let key = k.replace('~', "~0").replace('/', "~1");
                pointers(child, format!("{at}/{key}"), out);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                pointers(child, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

/// JSON documents: [`bytes_like`] half the time, otherwise one of `valid`
/// (JSON) with 1-3 of its fields replaced by hostile values, so inputs that
/// still parse reach the code behind the parser.
pub fn json_like(valid: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let n = valid.len();
    let docs: Vec<serde_json::Value> = valid
        .iter()
        .map(|v| serde_json::from_slice(v).expect("a valid JSON sample"))
        .collect();
    let edits = proptest::collection::vec(
        (any::<usize>(), proptest::sample::select(JSON_VALUES)),
        1..4,
    );
    prop_oneof![
        bytes_like(valid),
        (0..n, edits).prop_map(move |(i, edits)| {
            let mut doc = docs[i].clone();
            for (at, value) in edits {
                let mut all = Vec::new();
                pointers(&doc, String::new(), &mut all);
                let target = &all[at % all.len()];
                if let Some(node) = doc.pointer_mut(target) {
                    *node = serde_json::from_str(value).expect("a JSON value");
                }
            }
            serde_json::to_vec(&doc).unwrap_or_default()
        }),
    ]
}

/// Like [`bytes_like`], as text (decoders of files take UTF-8).
pub fn text_like(valid: Vec<String>) -> impl Strategy<Value = String> {
    bytes_like(valid.into_iter().map(String::into_bytes).collect())
        .prop_map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// `make(n)` for the `n` that makes it `len` bytes long (a field grown by `n`
/// characters), or the shortest one past `len` where no `n` hits it exactly
/// (a length prefix grew by a byte). For inputs at a decoder's size limit.
pub fn sized(make: impl Fn(usize) -> Vec<u8>, len: usize) -> Vec<u8> {
    let base = make(0).len();
    let mut n = len.saturating_sub(base);
    loop {
        let bytes = make(n);
        if bytes.len() >= len || n > len {
            // Overshot by the prefix's growth: step back while it still fits.
            if bytes.len() > len && n > 0 && make(n - 1).len() >= len {
                n -= 1;
                continue;
            }
            return bytes;
        }
        n += len - bytes.len();
    }
}

/// An error message fit for the operator: one line, and naming `what` (a file,
/// a field, a peer).
pub fn names(error: &str, what: &str) -> bool {
    error.contains(what)
}

/// Heap use of the calling thread, for targets that bound what a decoder
/// allocates (test builds only: the test binary's allocator counts per thread).
pub mod alloc {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    struct Counting;

    thread_local! {
        /// Bytes this thread holds now, and the most it held since `peak` began.
        static LIVE: Cell<isize> = const { Cell::new(0) };
        static HIGH: Cell<isize> = const { Cell::new(0) };
    }

    fn add(delta: isize) {
        // try_with: a thread being torn down has no counters left.
        let _ = LIVE.try_with(|live| {
            let now = live.get() + delta;
            live.set(now);
            let _ = HIGH.try_with(|high| high.set(high.get().max(now)));
        });
    }

    // SAFETY: every call goes to the system allocator unchanged; only counted.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            add(layout.size() as isize);
            unsafe { System.alloc(layout) }
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            add(layout.size() as isize);
            unsafe { System.alloc_zeroed(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            add(-(layout.size() as isize));
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            add(new_size as isize - layout.size() as isize);
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    #[global_allocator]
    static COUNTING: Counting = Counting;

    /// Runs `f` on this thread; its result and the most heap it held at once
    /// beyond what the thread held before (a current-thread runtime inside `f`
    /// is counted, work sent to other threads is not).
    pub fn peak<T>(f: impl FnOnce() -> T) -> (T, usize) {
        let start = LIVE.with(Cell::get);
        HIGH.with(|h| h.set(start));
        let out = f();
        let high = HIGH.with(Cell::get);
        (out, (high - start).max(0) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allocation_counter_sees_a_buffer() {
        let (_, peak) = alloc::peak(|| std::hint::black_box(vec![1u8; 1 << 20]));
        assert!((1 << 20..2 << 20).contains(&peak), "{peak}");
        let (_, none) = alloc::peak(|| 1 + 1);
        assert!(none < 1024, "{none}");
    }

    #[test]
    fn mutations_stay_in_bounds() {
        let all = [
            Mutation::Flip(99, 1),
            Mutation::Insert(99, 1),
            Mutation::Delete(99),
            Mutation::Truncate(99),
            Mutation::Duplicate(99, 99, 99),
            Mutation::Token(99, "{"),
            Mutation::Replace(99, 3, "}"),
        ];
        for m in &all {
            apply(Vec::new(), std::slice::from_ref(m));
            apply(b"abc".to_vec(), std::slice::from_ref(m));
        }
        assert_eq!(apply(b"abc".to_vec(), &[Mutation::Truncate(1)]), b"a");
    }

    #[test]
    fn sized_reaches_the_length_asked() {
        let json = |n: usize| format!("{{\"name\":\"{}\"}}", "x".repeat(n)).into_bytes();
        for len in [11, 12, 100, 8 << 20] {
            assert_eq!(sized(json, len).len(), len);
        }
        // A prefix that grows by a byte at 24 (like CBOR's): the next one past.
        let prefixed = |n: usize| {
            let mut v = vec![0u8; if n < 24 { 1 } else { 2 }];
            v.extend(std::iter::repeat_n(b'x', n));
            v
        };
        assert_eq!(sized(prefixed, 24).len(), 24);
        assert_eq!(sized(prefixed, 25).len(), 26);
        assert_eq!(sized(prefixed, 26).len(), 26);
    }
}
