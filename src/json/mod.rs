//! A JSON pull reader for the webhook's hot path: the caller asks for the members it wants
//! and skips the rest.
//!
//! Why not `serde_json`: it validates every byte of the values the decision never reads
//! (env lists, probes, managedFields, the last-applied annotation), which took a quarter of
//! the server's CPU under load. Here skipped values are scanned for their structure only:
//! strings must close, hold no control characters and escape only what JSON escapes;
//! brackets must pair by type. Numbers and literals inside skipped values are not parsed
//! (the API server sends only JSON it serialized itself; what is read is checked fully).
//! On x86-64 objects and arrays are skipped 64 bytes at a time (`block_skip.rs`); elsewhere
//! (arm64) byte at a time, which the `bytewise-json` feature forces on x86-64 too.
//! Anything `serde_json` accepts is read the same; `serde_json` stays the reference decoder:
//! tests and the fuzzer compare the two.

use std::borrow::Cow;

#[cfg(all(target_arch = "x86_64", any(test, not(feature = "bytewise-json"))))]
mod block_skip;
mod de;
mod syntax;

pub use de::RAW_VALUE;

pub(crate) use syntax::plain_run_bytewise;
use syntax::{class, stops_string, OPEN, PASS, QUOTE};
#[cfg(any(test, not(target_arch = "x86_64"), feature = "bytewise-json"))]
use syntax::{escape_len, BracketStack, CLOSE};

/// Nesting depth at most, as `serde_json`'s default recursion limit.
pub const MAX_DEPTH: usize = 128;

/// Where and why the input is not the JSON expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    pub what: Cow<'static, str>,
    /// The byte offset, when the problem is at one place.
    pub at: Option<usize>,
}

impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.at {
            Some(at) => write!(f, "{} at byte {at}", self.what),
            None => f.write_str(&self.what),
        }
    }
}

impl std::error::Error for JsonError {}

pub struct Reader<'a> {
    text: &'a str,
    pos: usize,
    depth: usize,
}

pub type Result<T> = std::result::Result<T, JsonError>;

impl<'a> Reader<'a> {
    pub fn new(text: &'a str) -> Self {
        Reader {
            text,
            pos: 0,
            depth: 0,
        }
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.pos).copied()
    }

    fn error<T>(&self, what: &'static str) -> Result<T> {
        Err(JsonError {
            what: Cow::Borrowed(what),
            at: Some(self.pos),
        })
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.pos += 1;
        }
    }

    /// The next significant byte, consumed if it is `b`.
    fn eat(&mut self, b: u8) -> bool {
        self.ws();
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn enter(&mut self) -> Result<()> {
        if self.depth >= MAX_DEPTH {
            return self.error("nested too deeply");
        }
        self.depth += 1;
        Ok(())
    }

    /// Consumes `null` if it comes next.
    pub fn null(&mut self) -> bool {
        self.ws();
        if self.bytes().get(self.pos..self.pos + 4) == Some(b"null") {
            self.pos += 4;
            true
        } else {
            false
        }
    }

    pub fn bool(&mut self) -> Result<bool> {
        self.ws();
        let rest = self.bytes().get(self.pos..).unwrap_or_default();
        if rest.starts_with(b"true") {
            self.pos += 4;
            Ok(true)
        } else if rest.starts_with(b"false") {
            self.pos += 5;
            Ok(false)
        } else {
            self.error("expected a boolean")
        }
    }

    /// Closes the object or array [`Self::enter`] opened.
    fn leave(&mut self, close: u8, no_separator: &'static str) -> Result<()> {
        if !self.eat(close) {
            return self.error(no_separator);
        }
        self.depth -= 1;
        Ok(())
    }

    /// Reads a string, borrowed from the input unless it has escapes.
    pub fn string(&mut self) -> Result<Cow<'a, str>> {
        if !self.eat(b'"') {
            return self.error("expected a string");
        }
        let start = self.pos;
        self.plain_run();
        match self.peek() {
            Some(b'"') => {
                let s = self.slice(start, self.pos)?;
                self.pos += 1;
                Ok(Cow::Borrowed(s))
            }
            Some(b'\\') => {
                let mut owned = self.slice(start, self.pos)?.to_owned();
                self.unescape(&mut owned)?;
                Ok(Cow::Owned(owned))
            }
            Some(_) => self.error("control character in string"),
            None => self.error("unterminated string"),
        }
    }

    /// Advances over string content up to the next quote, backslash or control character.
    fn plain_run(&mut self) {
        let rest = self.bytes().get(self.pos..).unwrap_or_default();
        #[cfg(all(target_arch = "x86_64", not(feature = "bytewise-json")))]
        let run = block_skip::string_run(rest);
        #[cfg(any(not(target_arch = "x86_64"), feature = "bytewise-json"))]
        let run = plain_run_bytewise(rest);
        self.pos += run;
    }

    fn slice(&self, start: usize, end: usize) -> Result<&'a str> {
        // Both ends sit next to ASCII quotes or escapes, so on character boundaries.
        match self.text.get(start..end) {
            Some(s) => Ok(s),
            None => self.error("string not on character boundaries"),
        }
    }

    /// Continues a string at a backslash, appending its decoded content to `out`.
    fn unescape(&mut self, out: &mut String) -> Result<()> {
        loop {
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let single = match self.peek() {
                        Some(b'"') => Some('"'),
                        Some(b'\\') => Some('\\'),
                        Some(b'/') => Some('/'),
                        Some(b'b') => Some('\u{8}'),
                        Some(b'f') => Some('\u{c}'),
                        Some(b'n') => Some('\n'),
                        Some(b'r') => Some('\r'),
                        Some(b't') => Some('\t'),
                        Some(b'u') => None,
                        _ => return self.error("invalid escape"),
                    };
                    self.pos += 1;
                    let c = match single {
                        Some(c) => c,
                        None => self.unicode_escape()?,
                    };
                    out.push(c);
                }
                Some(b) if stops_string(b) => return self.error("control character in string"),
                Some(_) => {
                    let start = self.pos;
                    self.plain_run();
                    out.push_str(self.slice(start, self.pos)?);
                }
                None => return self.error("unterminated string"),
            }
        }
    }

    /// Four hex digits, and a low surrogate's `\uXXXX` after a high one; the position
    /// ends after them.
    fn unicode_escape(&mut self) -> Result<char> {
        let high = self.hex4()?;
        let code = if (0xD800..0xDC00).contains(&high) {
            if self.bytes().get(self.pos..self.pos + 2) != Some(b"\\u") {
                return self.error("lone leading surrogate in hex escape");
            }
            self.pos += 2;
            let low = self.hex4()?;
            if !(0xDC00..0xE000).contains(&low) {
                return self.error("invalid low surrogate in hex escape");
            }
            0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
        } else {
            high
        };
        match char::from_u32(code) {
            Some(c) => Ok(c),
            None => self.error("lone trailing surrogate in hex escape"),
        }
    }

    fn hex4(&mut self) -> Result<u32> {
        let digits = self.bytes().get(self.pos..self.pos + 4);
        let parsed = digits
            .and_then(|d| std::str::from_utf8(d).ok())
            .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|d| u32::from_str_radix(d, 16).ok());
        match parsed {
            Some(v) => {
                self.pos += 4;
                Ok(v)
            }
            None => self.error("invalid hex escape"),
        }
    }

    /// Skips one value of any type.
    pub fn skip(&mut self) -> Result<()> {
        self.ws();
        match self.peek().map(class) {
            Some(QUOTE) => {
                self.pos += 1;
                self.skip_string_body()
            }
            Some(OPEN) => self.skip_nested(),
            Some(PASS) => {
                let start = self.pos;
                self.skip_scalar();
                if self.pos == start {
                    self.error("expected a value")
                } else {
                    Ok(())
                }
            }
            Some(_) => self.error("expected a value"),
            None => self.error("unexpected end of input"),
        }
    }

    /// Skips a number or literal: its alphabet, up to a separator or bracket.
    fn skip_scalar(&mut self) {
        let rest = self.bytes().get(self.pos..).unwrap_or_default();
        self.pos += rest
            .iter()
            .position(|&b| {
                class(b) != PASS || matches!(b, b',' | b':' | b' ' | b'\t' | b'\r' | b'\n')
            })
            .unwrap_or(rest.len());
    }

    /// Skips string content after its opening quote, through the closing quote. Most
    /// strings have no escapes and end at the first stop; one with escapes (an annotation
    /// holding a whole object as JSON has hundreds) is skipped 64 bytes at a time.
    fn skip_string_body(&mut self) -> Result<()> {
        self.plain_run();
        if self.peek() == Some(b'"') {
            self.pos += 1;
            return Ok(());
        }
        #[cfg(all(target_arch = "x86_64", not(feature = "bytewise-json")))]
        return self.jump(block_skip::skip_string(self.bytes(), self.pos));
        #[cfg(any(not(target_arch = "x86_64"), feature = "bytewise-json"))]
        self.skip_string_body_bytewise()
    }

    /// The portable [`Self::skip_string_body`].
    #[cfg(any(test, not(target_arch = "x86_64"), feature = "bytewise-json"))]
    fn skip_string_body_bytewise(&mut self) -> Result<()> {
        loop {
            self.plain_run();
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let rest = self.bytes().get(self.pos..).unwrap_or_default();
                    match escape_len(rest) {
                        Some(len) => self.pos += len,
                        None => return self.error("invalid escape"),
                    }
                }
                Some(_) => return self.error("control character in string"),
                None => return self.error("unterminated string"),
            }
        }
    }

    /// Skips an object or array, checking that brackets pair up. Nesting here is not
    /// limited (`serde_json` skips any depth too): the stack of open brackets is one bit
    /// each, so a body of n bytes needs at most n/8 bytes of it.
    fn skip_nested(&mut self) -> Result<()> {
        #[cfg(all(target_arch = "x86_64", not(feature = "bytewise-json")))]
        return self.jump(block_skip::skip_nested(self.bytes(), self.pos));
        #[cfg(any(not(target_arch = "x86_64"), feature = "bytewise-json"))]
        self.skip_nested_bytewise()
    }

    /// Moves to where a block skipper found the end, or to the error it found.
    #[cfg(all(target_arch = "x86_64", not(feature = "bytewise-json")))]
    fn jump(&mut self, found: std::result::Result<usize, (usize, &'static str)>) -> Result<()> {
        match found {
            Ok(end) => {
                self.pos = end;
                Ok(())
            }
            Err((at, what)) => {
                self.pos = at;
                self.error(what)
            }
        }
    }

    /// The portable [`Self::skip_nested`].
    #[cfg(any(test, not(target_arch = "x86_64"), feature = "bytewise-json"))]
    fn skip_nested_bytewise(&mut self) -> Result<()> {
        let mut open = BracketStack::default();
        loop {
            let rest = self.bytes().get(self.pos..).unwrap_or_default();
            self.pos += rest
                .iter()
                .position(|&b| class(b) != PASS)
                .unwrap_or(rest.len());
            let Some(b) = self.peek() else {
                return self.error("unexpected end of input");
            };
            match class(b) {
                QUOTE => {
                    self.pos += 1;
                    self.skip_string_body()?;
                }
                OPEN => {
                    open.push(b == b'{');
                    self.pos += 1;
                }
                CLOSE => {
                    if open.pop() != Some(b == b'}') {
                        return self.error("mismatched bracket");
                    }
                    self.pos += 1;
                    if open.is_empty() {
                        return Ok(());
                    }
                }
                _ => return self.error("unexpected character"),
            }
        }
    }

    /// Skips one value and returns its text.
    pub fn raw(&mut self) -> Result<&'a str> {
        self.ws();
        let start = self.pos;
        self.skip()?;
        self.slice(start, self.pos)
    }

    /// Only whitespace may follow the value read.
    pub fn end(&mut self) -> Result<()> {
        self.ws();
        if self.pos == self.text.len() {
            Ok(())
        } else {
            self.error("trailing characters")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Where each skipper says the value at the start of `text` ends.
    fn ends(text: &str) -> (Result<usize>, Result<usize>) {
        let mut fast = Reader::new(text);
        let fast_end = fast.skip_nested().map(|()| fast.pos);
        let mut slow = Reader::new(text);
        let slow_end = slow.skip_nested_bytewise().map(|()| slow.pos);
        (fast_end, slow_end)
    }

    fn json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            "[a-z\\\\\"{}\\[\\]/\u{1}\u{1f}\u{e9}\u{1F600} ]{0,80}"
                .prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(6, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::from),
                prop::collection::btree_map("[a-z\\\\\"]{0,12}", inner, 0..8)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn both_skippers_find_the_same_end(value in json(), pad in 0usize..70, pretty in any::<bool>()) {
            let doc = serde_json::json!([value]);
            let body = if pretty { serde_json::to_string_pretty(&doc) } else { serde_json::to_string(&doc) }.unwrap();
            // Padding inside the outer array moves the value across 64-byte block edges.
            let text = format!("[{}{}, 1]", " ".repeat(pad), &body[1..body.len() - 1]);
            let (fast, slow) = ends(&text);
            prop_assert_eq!(fast, Ok(text.len()));
            prop_assert_eq!(slow, Ok(text.len()));
            let trailing = format!("{text} , \"after\"]");
            let (fast, slow) = ends(&trailing);
            prop_assert_eq!(fast, Ok(text.len()));
            prop_assert_eq!(slow, Ok(text.len()));
        }

        #[test]
        fn mutations_never_panic_and_valid_ones_agree(value in json(), at in any::<prop::sample::Index>(), byte in prop::sample::select(b"\"\\{}[],: a\x01\t".to_vec())) {
            let text = serde_json::to_string(&serde_json::json!([value])).unwrap();
            let mut bytes = text.into_bytes();
            let i = at.index(bytes.len());
            bytes[i] = byte;
            if let Ok(text) = String::from_utf8(bytes) {
                let (fast, slow) = ends(&text);
                if serde_json::from_str::<serde_json::Value>(&text).is_ok() {
                    prop_assert_eq!(fast, Ok(text.len()));
                    prop_assert_eq!(slow, Ok(text.len()));
                }
            }
        }
    }

    /// Where each string skipper says the string at the start of `text` ends.
    fn string_ends(text: &str) -> (Result<usize>, Result<usize>) {
        let mut fast = Reader::new(text);
        let fast_end = fast.skip().map(|()| fast.pos);
        let mut slow = Reader::new(text);
        slow.pos = 1;
        let slow_end = slow.skip_string_body_bytewise().map(|()| slow.pos);
        (fast_end, slow_end)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn both_string_skippers_find_the_same_end(
            content in "[a-z\\\\\"/\u{e9}\u{1F600}\n\t\u{1}\u{1f}]{0,200}",
            pad in 0usize..70,
        ) {
            let string = serde_json::to_string(&format!("{}{content}", "x".repeat(pad))).unwrap();
            let text = format!("{string}, \"next\\\"\"]");
            let (fast, slow) = string_ends(&text);
            prop_assert_eq!(fast, Ok(string.len()));
            prop_assert_eq!(slow, Ok(string.len()));
        }

        #[test]
        fn string_skippers_agree_on_mutated_strings(
            content in "[a-z\\\"]{0,150}",
            at in any::<prop::sample::Index>(),
            byte in prop::sample::select(b"\"\\u0a\x01\t ".to_vec()),
        ) {
            let mut bytes = serde_json::to_string(&content).unwrap().into_bytes();
            let i = 1 + at.index(bytes.len() - 1);
            bytes[i] = byte;
            bytes.extend_from_slice(b" ]");
            let text = String::from_utf8(bytes).unwrap();
            let (fast, slow) = string_ends(&text);
            prop_assert_eq!(fast.is_ok(), slow.is_ok(), "{}", text);
            if let (Ok(f), Ok(s)) = (fast, slow) {
                prop_assert_eq!(f, s);
            }
        }
    }

    #[test]
    fn string_runs_end_where_the_bytewise_scan_ends() {
        for len in 0..80 {
            for stop in [b'"', b'\\', 0x00, 0x1f, b'\n'] {
                for at in 0..=len {
                    let mut text = vec![b'a'; len];
                    if at < len {
                        text[at] = stop;
                    }
                    text.extend_from_slice(&[0xc3, 0xa9, b' ', b'"']);
                    #[cfg(target_arch = "x86_64")]
                    assert_eq!(
                        super::block_skip::string_run(&text),
                        plain_run_bytewise(&text)
                    );
                    assert_eq!(
                        plain_run_bytewise(&text),
                        if at < len { at } else { len + 3 }
                    );
                }
            }
        }
    }

    #[test]
    fn escapes_across_block_edges() {
        for pad in 0..140 {
            for tail in [
                r#"\\"#,
                r#"\""#,
                r#"\\\""#,
                r#"\\\\"#,
                r#"\u0041"#,
                r#"]\"}"#,
            ] {
                let text = format!(
                    r#"[{}"{}x{}", {{"k":"]"}}]"#,
                    " ".repeat(pad),
                    "a".repeat(pad % 7),
                    tail
                );
                let (fast, slow) = ends(&text);
                assert_eq!(fast, Ok(text.len()), "{text}");
                assert_eq!(slow, Ok(text.len()), "{text}");
            }
            let bad = format!(r#"[{}"\q"]"#, " ".repeat(pad));
            let (fast, slow) = ends(&bad);
            assert!(fast.is_err() && slow.is_err(), "{bad}");
            let unclosed = format!(r#"[{}"\"]"#, " ".repeat(pad));
            let (fast, slow) = ends(&unclosed);
            assert!(fast.is_err() && slow.is_err(), "{unclosed}");
            // The same edges for a string skipped on its own.
            for tail in [r#"\\""#, r#"\"""#, r#"\u0041""#, r#"\\\"""#] {
                let text = format!(r#""{}{tail}, "x"]"#, "a".repeat(pad));
                let end = text.find(", ").unwrap();
                let (fast, slow) = string_ends(&text);
                assert_eq!(fast, Ok(end), "{text}");
                assert_eq!(slow, Ok(end), "{text}");
            }
            for bad in [r#"\q""#, "\u{1}\"", r#"\u12g4""#, r#"\""#] {
                let text = format!(r#""{}\"{bad}"#, "a".repeat(pad));
                let (fast, slow) = string_ends(&text);
                assert!(fast.is_err() && slow.is_err(), "{text}: {fast:?} {slow:?}");
            }
        }
    }
}
