//! Finds where a JSON object or array ends, 64 bytes at a time.
//!
//! Most of an AdmissionReview is values the decision never reads, and skipping them byte
//! by byte was three quarters of decoding. Here each 64-byte block is turned into bit masks
//! (quotes, backslashes, brackets, control characters) with SSE2 compares, which every
//! x86-64 CPU has (through `safe_arch`, so this crate keeps `forbid(unsafe_code)`). Quotes
//! that are not escaped toggle "inside a string" (a prefix XOR of their mask), and only
//! brackets outside strings are walked, one bit each, to pair them. The technique is the
//! first stage of simdjson (Langdale and Lemire, "Parsing Gigabytes of JSON per Second",
//! 2019). Checked: brackets pair by type, strings end, no control characters inside them
//! or stray ones outside, backslashes are followed by a valid escape letter. Other targets
//! use the byte-at-a-time scan in `mod.rs` (this module is built for x86-64 only).
// With `bytewise-json` only the tests comparing the two skippers use this module.
#![cfg_attr(feature = "bytewise-json", allow(dead_code))]

/// Where the value starting with the bracket at `start` ends (the index after its closing
/// bracket), or the offset and reason it is malformed.
pub fn skip_nested(bytes: &[u8], start: usize) -> Result<usize, (usize, &'static str)> {
    scan_blocks(bytes, start, "unexpected end of input", Scan::block)
}

/// Where the string whose content continues at `start` (inside it, after its opening
/// quote) ends: the index after its closing quote, or the offset and reason it is
/// malformed. Escapes are checked as in [`skip_nested`]; control characters before the
/// closing quote are errors.
pub fn skip_string(bytes: &[u8], start: usize) -> Result<usize, (usize, &'static str)> {
    scan_blocks(bytes, start, "unterminated string", Scan::string_block)
}

/// One block's scan: `Some(end)` when the value ends in it.
type Found = Result<Option<usize>, (usize, &'static str)>;

/// Runs `step` over `bytes` from `start`, 64 bytes at a time, until it finds the end.
fn scan_blocks(
    bytes: &[u8],
    start: usize,
    unterminated: &'static str,
    // Generic, not a function pointer: each step is inlined into its own loop.
    step: impl Fn(&mut Scan, &[u8; 64], usize, &[u8]) -> Found,
) -> Result<usize, (usize, &'static str)> {
    let mut scan = Scan::default();
    let mut at = start;
    let rest = bytes.get(start..).unwrap_or_default();
    let mut blocks = rest.chunks_exact(64);
    for block in blocks.by_ref() {
        let block: &[u8; 64] = block.try_into().map_err(|_| (at, "internal"))?;
        if let Some(end) = step(&mut scan, block, at, bytes)? {
            return Ok(end);
        }
        at += 64;
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        // Spaces after the end read as whitespace, or as string content: never an end.
        let mut padded = [b' '; 64];
        for (to, from) in padded.iter_mut().zip(tail) {
            *to = *from;
        }
        if let Some(end) = step(&mut scan, &padded, at, bytes)? {
            if end <= bytes.len() {
                return Ok(end);
            }
        }
    }
    Err((bytes.len(), unterminated))
}

use safe_arch::{
    bitor_m128i, cmp_eq_mask_i8_m128i, load_unaligned_m128i, m128i, max_u8_m128i,
    move_mask_i8_m128i, set_splat_i8_m128i,
};

/// What carries from one block to the next.
#[derive(Default)]
struct Scan {
    /// The block starts inside a string.
    in_string: bool,
    /// The block's first byte is escaped by a backslash that ended the previous block.
    escaped_first: bool,
    brackets: super::syntax::BracketStack,
}

struct Masks {
    quote: u64,
    backslash: u64,
    /// `{`, `[`, `}` and `]`.
    bracket: u64,
    /// Bytes below 0x20.
    control: u64,
}

fn eq(v: m128i, c: u8) -> m128i {
    cmp_eq_mask_i8_m128i(v, set_splat_i8_m128i(c as i8))
}

fn bits(v: m128i) -> u64 {
    u64::from(move_mask_i8_m128i(v) as u16)
}

fn chunks(block: &[u8; 64]) -> impl Iterator<Item = (u32, m128i)> + '_ {
    block.chunks_exact(16).enumerate().map(|(i, chunk)| {
        (
            16 * i as u32,
            load_unaligned_m128i(chunk.try_into().unwrap_or(&[0; 16])),
        )
    })
}

fn masks(block: &[u8; 64]) -> Masks {
    let mut m = Masks {
        quote: 0,
        backslash: 0,
        bracket: 0,
        control: 0,
    };
    let low = set_splat_i8_m128i(0x1f);
    for (shift, v) in chunks(block) {
        m.quote |= bits(eq(v, b'"')) << shift;
        m.backslash |= bits(eq(v, b'\\')) << shift;
        let open = bitor_m128i(eq(v, b'{'), eq(v, b'['));
        let close = bitor_m128i(eq(v, b'}'), eq(v, b']'));
        m.bracket |= bits(bitor_m128i(open, close)) << shift;
        // Unsigned v <= 0x1f exactly when max(v, 0x1f) == 0x1f.
        m.control |= bits(cmp_eq_mask_i8_m128i(max_u8_m128i(v, low), low)) << shift;
    }
    m
}

/// The length of the leading run of plain string content (up to a quote, a backslash or a
/// control character), 16 bytes at a time: the strings read one by one are mostly short
/// keys, found in one compare instead of a loop per byte.
pub fn string_run(bytes: &[u8]) -> usize {
    let low = set_splat_i8_m128i(0x1f);
    let mut chunks = bytes.chunks_exact(16);
    let mut run = 0;
    for chunk in chunks.by_ref() {
        let v = load_unaligned_m128i(chunk.try_into().unwrap_or(&[0; 16]));
        let stops = bitor_m128i(
            bitor_m128i(eq(v, b'"'), eq(v, b'\\')),
            cmp_eq_mask_i8_m128i(max_u8_m128i(v, low), low),
        );
        let mask = bits(stops);
        if mask != 0 {
            return run + mask.trailing_zeros() as usize;
        }
        run += 16;
    }
    run + super::syntax::plain_run_bytewise(chunks.remainder())
}

/// Tab, line feed and carriage return: only needed when a block has control characters.
fn spaces(block: &[u8; 64]) -> u64 {
    chunks(block).fold(0, |acc, (shift, v)| {
        let ws = bitor_m128i(bitor_m128i(eq(v, b'\t'), eq(v, b'\n')), eq(v, b'\r'));
        acc | bits(ws) << shift
    })
}

/// Bit i set to the XOR of bits 0..=i.
fn prefix_xor(mut x: u64) -> u64 {
    for shift in [1, 2, 4, 8, 16, 32] {
        x ^= x << shift;
    }
    x
}

fn byte(block: &[u8; 64], i: u32) -> u8 {
    block.get(i as usize).copied().unwrap_or(b' ')
}

impl Scan {
    /// Scans one block at offset `at`: `Some(end)` when the outermost bracket closes in it.
    fn block(
        &mut self,
        block: &[u8; 64],
        at: usize,
        input: &[u8],
    ) -> Result<Option<usize>, (usize, &'static str)> {
        let m = masks(block);
        let escaped = self.escapes(m.backslash, at, input)?;
        let quotes = m.quote & !escaped;
        let inside = prefix_xor(quotes) ^ if self.in_string { u64::MAX } else { 0 };
        self.in_string = inside >> 63 == 1;
        // Control characters are errors inside strings, and outside them but for \t \n \r.
        // Past the value's end they belong to the enclosing document: an error there too.
        let bad_control = match m.control {
            0 => 0,
            control => control & (inside | !spaces(block)),
        };
        if bad_control != 0 {
            let i = bad_control.trailing_zeros();
            return Err((at + i as usize, "control character"));
        }
        let mut brackets = m.bracket & !inside;
        let mut top = self.brackets.top;
        while brackets != 0 {
            let i = brackets.trailing_zeros();
            brackets &= brackets - 1;
            match byte(block, i) {
                b @ (b'{' | b'[') => top.push(b == b'{', &mut self.brackets.outer),
                b => {
                    if top.pop(&mut self.brackets.outer) != Some(b == b'}') {
                        return Err((at + i as usize, "mismatched bracket"));
                    }
                    if top.is_empty() {
                        return Ok(Some(at + i as usize + 1));
                    }
                }
            }
        }
        self.brackets.top = top;
        Ok(None)
    }

    /// Scans one block of string content at offset `at`: `Some(end)` when the string's
    /// closing quote is in it. Starts as [`Scan::block`] does; the shared lines stay
    /// inline in both (as a helper returning the masks, decoding measured 10% slower).
    fn string_block(
        &mut self,
        block: &[u8; 64],
        at: usize,
        input: &[u8],
    ) -> Result<Option<usize>, (usize, &'static str)> {
        let m = masks(block);
        let escaped = self.escapes(m.backslash, at, input)?;
        let quotes = m.quote & !escaped;
        // The bytes before the closing quote (all of them when it is not in this block).
        let content = match quotes {
            0 => u64::MAX,
            q => (q & q.wrapping_neg()) - 1,
        };
        let control = m.control & content;
        if control != 0 {
            let i = control.trailing_zeros();
            return Err((at + i as usize, "control character in string"));
        }
        Ok(match quotes {
            0 => None,
            q => Some(at + q.trailing_zeros() as usize + 1),
        })
    }

    /// The bytes escaped by a backslash, checking each is a valid escape (in `input`, as
    /// `\u` escapes may run into the next block). A run of backslashes escapes every second
    /// one; backslashes are rare, so walked one by one.
    fn escapes(
        &mut self,
        backslash: u64,
        at: usize,
        input: &[u8],
    ) -> Result<u64, (usize, &'static str)> {
        let mut escaped = 0u64;
        let mut pending = backslash;
        if self.escaped_first {
            escaped |= 1;
            pending &= !1;
            check_escape(input, at)?;
        }
        self.escaped_first = false;
        while pending != 0 {
            let i = pending.trailing_zeros();
            pending &= pending - 1;
            if i == 63 {
                self.escaped_first = true;
            } else {
                let next = 1u64 << (i + 1);
                escaped |= next;
                pending &= !next;
                check_escape(input, at + i as usize + 1)?;
            }
        }
        Ok(escaped)
    }
}

/// The escape at `at` (after a backslash), with the four hex digits of a `\u`.
fn check_escape(input: &[u8], at: usize) -> Result<(), (usize, &'static str)> {
    match super::syntax::escape_len(input.get(at..).unwrap_or_default()) {
        Some(_) => Ok(()),
        None => Err((at, "invalid escape")),
    }
}
