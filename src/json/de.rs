//! The pull reader as a `serde` deserializer. The review view is described once, by its
//! `Deserialize` impls (`admission/review.rs`); this reader decodes it on the hot path and
//! `serde_json` is the reference that tests and the fuzzer hold it to. What the view skips
//! (`IgnoredAny`) is skipped by structure; numbers are never read, since nothing in the view
//! is one.

use std::borrow::Cow;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use super::{JsonError, Reader, Result};

/// The newtype name under which a value's JSON text is asked for (see
/// `admission::review::RawJson`): this reader answers with the borrowed text.
pub const RAW_VALUE: &str = "$ecr_preflight::json::RawValue";

impl de::Error for JsonError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        JsonError {
            what: Cow::Owned(msg.to_string()),
            at: None,
        }
    }
}

impl<'de> de::Deserializer<'de> for &mut Reader<'de> {
    type Error = JsonError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.ws();
        match self.peek() {
            Some(b'{') => self.deserialize_map(visitor),
            Some(b'[') => self.deserialize_seq(visitor),
            Some(b'"') => self.deserialize_str(visitor),
            Some(b't' | b'f') => self.deserialize_bool(visitor),
            _ if self.null() => visitor.visit_unit(),
            _ => self.error("expected a string, object, array, boolean or null"),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_bool(self.bool()?)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.string()? {
            Cow::Borrowed(s) => visitor.visit_borrowed_str(s),
            Cow::Owned(s) => visitor.visit_string(s),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        if self.null() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        if self.null() {
            visitor.visit_unit()
        } else {
            self.error("expected null")
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        if name == RAW_VALUE {
            visitor.visit_borrowed_str(self.raw()?)
        } else {
            visitor.visit_newtype_struct(self)
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        if !self.eat(b'[') {
            return self.error("expected an array");
        }
        self.enter()?;
        let value = visitor.visit_seq(Items {
            reader: &mut *self,
            first: true,
        })?;
        self.leave(b']', "expected ',' or ']'")?;
        Ok(value)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        if !self.eat(b'{') {
            return self.error("expected an object");
        }
        self.enter()?;
        let value = visitor.visit_map(Members {
            reader: &mut *self,
            first: true,
        })?;
        self.leave(b'}', "expected ',' or '}'")?;
        Ok(value)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_map(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.skip()?;
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf unit_struct
        tuple tuple_struct enum
    }
}

/// The next item of an object or array: `true` when there is one, after the separator.
fn next_item(
    reader: &mut Reader<'_>,
    first: &mut bool,
    close: u8,
    no_separator: &'static str,
) -> Result<bool> {
    reader.ws();
    if reader.peek() == Some(close) {
        return Ok(false);
    }
    if !std::mem::take(first) && !reader.eat(b',') {
        return reader.error(no_separator);
    }
    Ok(true)
}

/// The members of an object, key then value.
struct Members<'r, 'de> {
    reader: &'r mut Reader<'de>,
    first: bool,
}

impl<'de> MapAccess<'de> for Members<'_, 'de> {
    type Error = JsonError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        if !next_item(self.reader, &mut self.first, b'}', "expected ',' or '}'")? {
            return Ok(None);
        }
        self.reader.ws();
        if self.reader.peek() != Some(b'"') {
            return self.reader.error("expected a string");
        }
        let key = seed.deserialize(&mut *self.reader)?;
        if !self.reader.eat(b':') {
            return self.reader.error("expected ':'");
        }
        Ok(Some(key))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        seed.deserialize(&mut *self.reader)
    }
}

/// The elements of an array.
struct Items<'r, 'de> {
    reader: &'r mut Reader<'de>,
    first: bool,
}

impl<'de> SeqAccess<'de> for Items<'_, 'de> {
    type Error = JsonError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        if !next_item(self.reader, &mut self.first, b']', "expected ',' or ']'")? {
            return Ok(None);
        }
        seed.deserialize(&mut *self.reader).map(Some)
    }
}
