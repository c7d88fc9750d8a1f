//! The [`Message`] trait and the [`message!`](crate::message!) macro that defines a Kafka message once and derives
//! `decode`/`encode` for every version from it.
//!
//! A message definition mirrors the Kafka JSON spec: each field carries its version range
//! (`"3+"`, `"0-12"`), optionally its nullable-version range and a default; tagged fields sit in an
//! `@tagged` block with their tag numbers (declared in ascending tag order, the order they are
//! written in). Nested structs inherit the flexible threshold of the message that contains them.
//!
//! Rules shared by every message:
//! - A field absent in a version decodes to its default and is not encoded.
//! - In flexible versions every struct ends with a tagged-field section. Tagged fields are written
//!   only when they differ from their default: some old clients (librdkafka 2.0.2) cannot skip
//!   every tagged field. Unknown tags are skipped on decode.
//! - `None` in a nullable field is written as null even in a version where the spec does not
//!   allow null; callers only put `None` where the spec allows it.
//! - Decoding is bounded (see [`crate::protocol::wire`]); encoding never fails.
//! - A nullable struct (`Option<Nested>`, e.g. ConsumerGroupHeartbeat's `assignment`) is an int8
//!   marker, -1 for null and 1 before the struct; like Kafka's generated readers, any negative
//!   marker reads as null and any other as present.
//! - `flexible = "none"` declares an API without flexible versions.

use std::fmt::Debug;

use bytes::Bytes;

use super::api::ApiKey;
use super::record_set::RecordSet;
use super::sample::Sample;
use super::wire::{DecodeError, Reader, Writer};

/// A value that can be read from and written to the wire in a given version. Implemented for the
/// primitive field types and, by [`message!`](crate::message!), for every message and nested struct.
pub trait Field: Sized {
    fn read(r: &mut Reader, version: i16, flexible: bool) -> Result<Self, DecodeError>;
    fn write(&self, w: &mut Writer, version: i16, flexible: bool);
    /// The spec's default when the JSON gives none: zero, empty, false; nullable fields default
    /// to the empty (not null) value, as in Kafka's generated code.
    fn spec_default() -> Self;
}

/// A top-level request or response body.
pub trait Message: Field + Sample + Default + Clone + Debug + PartialEq {
    const API_KEY: ApiKey;
    /// Versions this codec implements (inclusive); decode rejects others.
    const VERSIONS: (i16, i16);
    /// First flexible version (compact strings/arrays, tagged fields).
    const FLEXIBLE_MIN: i16;

    fn is_flexible(version: i16) -> bool {
        version >= Self::FLEXIBLE_MIN
    }

    /// Decodes the body at `version`; does not require the reader to be exhausted.
    fn decode(r: &mut Reader, version: i16) -> Result<Self, DecodeError> {
        if version < Self::VERSIONS.0 || version > Self::VERSIONS.1 {
            return Err(DecodeError::UnsupportedVersion {
                api_key: Self::API_KEY as i16,
                version,
            });
        }
        Self::read(r, version, Self::is_flexible(version))
    }

    fn encode(&self, w: &mut Writer, version: i16) {
        self.write(w, version, Self::is_flexible(version));
    }
}

/// Parses a Kafka version-range string ("3+", "0-12", "5", "none") at compile time.
/// A malformed string is a compile error (const evaluation panics).
pub const fn range(s: &str) -> (i16, i16) {
    let b = s.as_bytes();
    if b.len() == 4 && b[0] == b'n' {
        return (1, 0); // "none": empty range
    }
    let mut i = 0;
    let mut lo: i16 = 0;
    while i < b.len() && b[i].is_ascii_digit() {
        lo = lo * 10 + (b[i] - b'0') as i16;
        i += 1;
    }
    assert!(i > 0, "version range must start with a number");
    if i == b.len() {
        return (lo, lo);
    }
    if b[i] == b'+' {
        assert!(i + 1 == b.len(), "garbage after '+'");
        return (lo, i16::MAX);
    }
    assert!(b[i] == b'-', "expected '+' or '-'");
    i += 1;
    let mut hi: i16 = 0;
    let start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        hi = hi * 10 + (b[i] - b'0') as i16;
        i += 1;
    }
    assert!(i > start && i == b.len(), "bad upper bound");
    (lo, hi)
}

/// First flexible version from a flexible-versions string; `i16::MAX` for "none".
pub const fn flexible_min(s: &str) -> i16 {
    let r = range(s);
    if r.0 > r.1 {
        i16::MAX
    } else {
        r.0
    }
}

#[inline]
pub const fn in_range(version: i16, r: (i16, i16)) -> bool {
    version >= r.0 && version <= r.1
}

macro_rules! fixed_field {
    ($t:ty, $read:ident, $put:ident) => {
        impl Field for $t {
            #[inline]
            fn read(r: &mut Reader, _: i16, _: bool) -> Result<Self, DecodeError> {
                r.$read()
            }
            #[inline]
            fn write(&self, w: &mut Writer, _: i16, _: bool) {
                w.$put(*self);
            }
            fn spec_default() -> Self {
                Default::default()
            }
        }
    };
}

fixed_field!(i8, read_i8, put_i8);
fixed_field!(i16, read_i16, put_i16);
fixed_field!(i32, read_i32, put_i32);
fixed_field!(i64, read_i64, put_i64);
fixed_field!(u16, read_u16, put_u16);
fixed_field!(u32, read_u32, put_u32);
fixed_field!(f64, read_f64, put_f64);
fixed_field!(bool, read_bool, put_bool);

impl Field for [u8; 16] {
    fn read(r: &mut Reader, _: i16, _: bool) -> Result<Self, DecodeError> {
        r.read_uuid()
    }
    fn write(&self, w: &mut Writer, _: i16, _: bool) {
        w.put_uuid(self);
    }
    fn spec_default() -> Self {
        [0; 16]
    }
}

impl Field for String {
    fn read(r: &mut Reader, _: i16, flexible: bool) -> Result<Self, DecodeError> {
        r.read_string(flexible)
    }
    fn write(&self, w: &mut Writer, _: i16, flexible: bool) {
        w.put_string(self, flexible);
    }
    fn spec_default() -> Self {
        String::new()
    }
}

impl Field for Option<String> {
    fn read(r: &mut Reader, _: i16, flexible: bool) -> Result<Self, DecodeError> {
        r.read_nullable_string(flexible)
    }
    fn write(&self, w: &mut Writer, _: i16, flexible: bool) {
        w.put_nullable_string(self.as_deref(), flexible);
    }
    fn spec_default() -> Self {
        Some(String::new())
    }
}

impl Field for Bytes {
    fn read(r: &mut Reader, _: i16, flexible: bool) -> Result<Self, DecodeError> {
        r.read_bytes_field(flexible)
    }
    fn write(&self, w: &mut Writer, _: i16, flexible: bool) {
        w.put_bytes_field(self, flexible);
    }
    fn spec_default() -> Self {
        Bytes::new()
    }
}

/// Nullable bytes, and `records` (same encoding): zero-copy on decode, shared chunk on encode.
impl Field for Option<Bytes> {
    fn read(r: &mut Reader, _: i16, flexible: bool) -> Result<Self, DecodeError> {
        r.read_nullable_bytes(flexible)
    }
    fn write(&self, w: &mut Writer, _: i16, flexible: bool) {
        w.put_nullable_bytes(self.as_ref(), flexible);
    }
    fn spec_default() -> Self {
        Some(Bytes::new())
    }
}

/// A Fetch response's `records` (see [`RecordSet`]): one buffer on decode, each large chunk
/// shared on encode.
impl Field for Option<RecordSet> {
    fn read(r: &mut Reader, _: i16, flexible: bool) -> Result<Self, DecodeError> {
        Ok(r.read_nullable_bytes(flexible)?.map(RecordSet::from))
    }
    fn write(&self, w: &mut Writer, _: i16, flexible: bool) {
        w.put_nullable_record_set(self.as_ref(), flexible);
    }
    fn spec_default() -> Self {
        Some(RecordSet::default())
    }
}

impl<T: Field> Field for Vec<T> {
    fn read(r: &mut Reader, version: i16, flexible: bool) -> Result<Self, DecodeError> {
        r.read_array(flexible, |r| T::read(r, version, flexible))
    }
    fn write(&self, w: &mut Writer, version: i16, flexible: bool) {
        w.put_array_len(self.len(), flexible);
        for e in self {
            e.write(w, version, flexible);
        }
    }
    fn spec_default() -> Self {
        Vec::new()
    }
}

/// Implemented by [`message!`](crate::message!) for every struct it defines, so that
/// `Option<Struct>` (a nullable struct) has its own encoding, distinct from nullable strings,
/// bytes and arrays.
pub trait Struct: Field {}

impl<T: Struct> Field for Option<T> {
    fn read(r: &mut Reader, version: i16, flexible: bool) -> Result<Self, DecodeError> {
        if r.read_i8()? < 0 {
            return Ok(None);
        }
        T::read(r, version, flexible).map(Some)
    }
    fn write(&self, w: &mut Writer, version: i16, flexible: bool) {
        match self {
            Some(v) => {
                w.put_i8(1);
                v.write(w, version, flexible);
            }
            None => w.put_i8(-1),
        }
    }
    fn spec_default() -> Self {
        None
    }
}

impl<T: Field> Field for Option<Vec<T>> {
    fn read(r: &mut Reader, version: i16, flexible: bool) -> Result<Self, DecodeError> {
        r.read_nullable_array(flexible, |r| T::read(r, version, flexible))
    }
    fn write(&self, w: &mut Writer, version: i16, flexible: bool) {
        match self {
            Some(v) => v.write(w, version, flexible),
            None => w.put_null_array(flexible),
        }
    }
    fn spec_default() -> Self {
        Some(Vec::new())
    }
}

/// Picks the declared default or the type's spec default.
#[doc(hidden)]
#[macro_export]
macro_rules! __odradek_field_default {
    ($t:ty) => {
        <$t as $crate::protocol::codec::Field>::spec_default()
    };
    ($t:ty, $d:expr) => {
        $d
    };
}

/// Whether a field is nullable in `version` (for sampling only; see module docs).
#[doc(hidden)]
#[macro_export]
macro_rules! __odradek_nullable {
    ($v:expr) => {
        false
    };
    ($v:expr, $n:literal) => {
        $crate::protocol::codec::in_range($v, const { $crate::protocol::codec::range($n) })
    };
}

/// Defines message structs. Syntax (one or more structs per invocation):
///
/// ```ignore
/// message! {
///     /// Top-level: api key, implemented versions, flexible versions.
///     pub struct ProduceRequest [api = Produce, versions = "3-11", flexible = "9+"] {
///         transactional_id: Option<String> = "3+", nullable "3+", default None;
///         acks: i16 = "0+";
///         topic_data: Vec<TopicProduceData> = "0+";
///         @tagged {
///             // tag number, then the same attributes as a field
///             cluster_id: Option<String> = "12+", tag 0, nullable "12+", default None;
///         }
///     }
///     /// Nested struct: no header, inherits versions and flexibility from its parent.
///     pub struct TopicProduceData { name: String = "0+"; }
/// }
/// ```
#[macro_export]
macro_rules! message {
    () => {};
    (
        $(#[$meta:meta])*
        pub struct $name:ident $([api = $api:ident, versions = $vers:literal, flexible = $flex:literal])? {
            $( $(#[$fmeta:meta])* $field:ident : $fty:ty = $fv:literal $(, nullable $nv:literal)? $(, default $def:expr)? ; )*
            $( @tagged {
                $( $(#[$tmeta:meta])* $tfield:ident : $tty:ty = $tv:literal, tag $tag:literal $(, nullable $tnv:literal)? $(, default $tdef:expr)? ; )*
            } )?
        }
        $($rest:tt)*
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $fty, )*
            $($( $(#[$tmeta])* pub $tfield: $tty, )*)?
        }

        impl Default for $name {
            fn default() -> Self {
                Self {
                    $( $field: $crate::__odradek_field_default!($fty $(, $def)?), )*
                    $($( $tfield: $crate::__odradek_field_default!($tty $(, $tdef)?), )*)?
                }
            }
        }

        impl $crate::protocol::codec::Field for $name {
            #[allow(unused_variables)]
            fn read(
                r: &mut $crate::protocol::wire::Reader,
                version: i16,
                flexible: bool,
            ) -> Result<Self, $crate::protocol::wire::DecodeError> {
                use $crate::protocol::codec::{in_range, range, Field};
                let mut this = Self::default();
                $(
                    if in_range(version, const { range($fv) }) {
                        this.$field = <$fty as Field>::read(r, version, flexible)?;
                    }
                )*
                if flexible {
                    r.read_tagged_fields(|tag, sub| {
                        match tag {
                            $($(
                                $tag if in_range(version, const { range($tv) }) => {
                                    this.$tfield = <$tty as Field>::read(sub, version, flexible)?;
                                    Ok(true)
                                }
                            )*)?
                            _ => Ok(false),
                        }
                    })?;
                }
                Ok(this)
            }

            #[allow(unused_variables, unused_mut)]
            fn write(&self, w: &mut $crate::protocol::wire::Writer, version: i16, flexible: bool) {
                use $crate::protocol::codec::{in_range, range, Field};
                $(
                    if in_range(version, const { range($fv) }) {
                        <$fty as Field>::write(&self.$field, w, version, flexible);
                    }
                )*
                if flexible {
                    let mut count: u32 = 0;
                    $($(
                        let $tfield = in_range(version, const { range($tv) })
                            && self.$tfield != $crate::__odradek_field_default!($tty $(, $tdef)?);
                        count += u32::from($tfield);
                    )*)?
                    w.put_uvarint(count);
                    $($(
                        if $tfield {
                            w.put_tagged_field($tag, |w| {
                                <$tty as Field>::write(&self.$tfield, w, version, flexible)
                            });
                        }
                    )*)?
                }
            }

            fn spec_default() -> Self {
                Self::default()
            }
        }

        impl $crate::protocol::codec::Struct for $name {}

        impl $crate::protocol::sample::Sample for $name {
            #[allow(unused_variables)]
            fn sample(g: &mut $crate::protocol::sample::Gen, version: i16, _nullable: bool) -> Self {
                use $crate::protocol::codec::{in_range, range};
                use $crate::protocol::sample::Sample;
                let mut this = Self::default();
                $(
                    if in_range(version, const { range($fv) }) {
                        this.$field = <$fty as Sample>::sample(
                            g, version, $crate::__odradek_nullable!(version $(, $nv)?));
                    }
                )*
                // Tagged fields: half the time left at their default (so not written at all).
                $($(
                    if in_range(version, const { range($tv) }) && g.coin() {
                        this.$tfield = <$tty as Sample>::sample(
                            g, version, $crate::__odradek_nullable!(version $(, $tnv)?));
                    }
                )*)?
                this
            }
        }

        $(
            impl $crate::protocol::codec::Message for $name {
                const API_KEY: $crate::protocol::api::ApiKey = $crate::protocol::api::ApiKey::$api;
                const VERSIONS: (i16, i16) = $crate::protocol::codec::range($vers);
                const FLEXIBLE_MIN: i16 = $crate::protocol::codec::flexible_min($flex);
            }
        )?

        $crate::message!($($rest)*);
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse() {
        assert_eq!(range("3+"), (3, i16::MAX));
        assert_eq!(range("0-12"), (0, 12));
        assert_eq!(range("7"), (7, 7));
        assert!(!in_range(0, range("none")));
        assert!(in_range(12, range("0-12")) && !in_range(13, range("0-12")));
        assert_eq!(flexible_min("none"), i16::MAX);
        assert_eq!(flexible_min("6+"), 6);
    }

    /// Nullable struct: int8 marker (-1 null, 1 present); any negative marker reads as null.
    #[test]
    fn nullable_struct_marker() {
        use crate::protocol::messages::ConsumerGroupHeartbeatResponseAssignment as A;
        let some = Some(A::default());
        let mut w = Writer::new();
        some.write(&mut w, 0, true);
        None::<A>.write(&mut w, 0, true);
        // marker 1, empty compact array, no tagged fields; then marker -1.
        assert_eq!(w.into_vec(), [1, 1, 0, 0xff]);
        let mut r = Reader::new(Bytes::from_static(&[1, 1, 0, 0xff, 0x80, 1]));
        assert_eq!(Option::<A>::read(&mut r, 0, true).unwrap(), some);
        assert_eq!(Option::<A>::read(&mut r, 0, true).unwrap(), None);
        assert_eq!(Option::<A>::read(&mut r, 0, true).unwrap(), None);
        // Present but truncated.
        assert!(Option::<A>::read(&mut r, 0, true).is_err());
    }
}
