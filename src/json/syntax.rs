//! JSON at the byte level, shared by the pull reader and the block skipper: byte classes,
//! where a run of plain string content ends, escapes, and the stack of open brackets. A
//! leaf: it imports nothing of the crate.

/// Byte classes for skipping.
pub(crate) const OTHER: u8 = 0;
/// Whitespace, separators, and the alphabet of numbers and literals.
pub(crate) const PASS: u8 = 1;
pub(crate) const QUOTE: u8 = 2;
pub(crate) const OPEN: u8 = 3;
pub(crate) const CLOSE: u8 = 4;

// Evaluated at compile time: an out-of-bounds index would fail the build, not panic.
#[allow(clippy::indexing_slicing)]
const fn classes() -> [u8; 256] {
    let mut t = [OTHER; 256];
    let pass = b" \t\r\n,:0123456789+-.eEtruefalsn";
    let mut i = 0;
    while i < pass.len() {
        t[pass[i] as usize] = PASS;
        i += 1;
    }
    t[b'"' as usize] = QUOTE;
    t[b'{' as usize] = OPEN;
    t[b'[' as usize] = OPEN;
    t[b'}' as usize] = CLOSE;
    t[b']' as usize] = CLOSE;
    t
}
static CLASS: [u8; 256] = classes();

/// Bytes that end a run of plain string content: the quote, a backslash, control characters.
#[allow(clippy::indexing_slicing)]
const fn string_stops() -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
}
static STRING_STOP: [bool; 256] = string_stops();

pub(crate) fn class(b: u8) -> u8 {
    CLASS.get(usize::from(b)).copied().unwrap_or(OTHER)
}

pub(crate) fn stops_string(b: u8) -> bool {
    STRING_STOP.get(usize::from(b)).copied().unwrap_or(true)
}

/// The length of the leading run of plain string content: up to a quote, a backslash or a
/// control character.
pub(crate) fn plain_run_bytewise(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .position(|&b| stops_string(b))
        .unwrap_or(bytes.len())
}

/// The length of a valid escape after its backslash, `bytes` starting at the escape
/// letter: 1, or 5 for `\uXXXX`. `None` when JSON has no such escape.
pub(crate) fn escape_len(bytes: &[u8]) -> Option<usize> {
    match bytes.first()? {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(1),
        b'u' => bytes
            .get(1..5)
            .filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))
            .map(|_| 5),
        _ => None,
    }
}

/// Open brackets, one bit each (set for an object): the innermost 128 in a register.
#[derive(Default)]
pub(crate) struct BracketStack {
    pub(crate) top: Innermost,
    pub(crate) outer: Vec<u128>,
}

/// The innermost 128 open brackets and the depth. `Copy`, so that the block scanner keeps
/// it in a local while walking a block: through a reference every bracket was a load and a
/// store, and the scan 20% slower.
#[derive(Default, Clone, Copy)]
pub(crate) struct Innermost {
    bits: u128,
    len: usize,
}

impl Innermost {
    /// Pushes a bracket; the bits spill to `outer` every 128 levels.
    #[inline]
    pub(crate) fn push(&mut self, object: bool, outer: &mut Vec<u128>) {
        if self.len > 0 && self.len.is_multiple_of(128) {
            outer.push(self.bits);
            self.bits = 0;
        }
        self.bits = (self.bits << 1) | u128::from(object);
        self.len += 1;
    }

    /// The innermost bracket, removed: `Some(true)` for an object.
    #[inline]
    pub(crate) fn pop(&mut self, outer: &mut Vec<u128>) -> Option<bool> {
        if self.len == 0 {
            return None;
        }
        let object = self.bits & 1 == 1;
        self.bits >>= 1;
        self.len -= 1;
        if self.len > 0 && self.len.is_multiple_of(128) {
            self.bits = outer.pop().unwrap_or_default();
        }
        Some(object)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(any(test, not(target_arch = "x86_64"), feature = "bytewise-json"))]
impl BracketStack {
    pub(crate) fn push(&mut self, object: bool) {
        self.top.push(object, &mut self.outer);
    }

    pub(crate) fn pop(&mut self) -> Option<bool> {
        self.top.pop(&mut self.outer)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.top.is_empty()
    }
}
