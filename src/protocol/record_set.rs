//! A Fetch response's `records`: the batches as one or more buffers sent back to back.
//!
//! The broker answers a tailing consumer from its batch cache, one buffer per batch. Joining
//! them into one buffer per partition cost ~10% of the shard's CPU in W4; a [`RecordSet`] keeps
//! them apart, the [`Writer`](super::wire::Writer) emits each large one as a shared chunk, and
//! the connection sends the chunks with one gathered write. On the wire it is one `records`
//! field (its length is the chunks' total), and decoding gives back a single buffer.

use bytes::{Bytes, BytesMut};

/// Record data as consecutive buffers (see the module docs). Equality compares contents, not
/// how they are split.
#[derive(Debug, Clone, Default)]
pub struct RecordSet {
    chunks: Vec<Bytes>,
}

impl RecordSet {
    /// The buffers in order; empty ones are left out.
    pub fn from_chunks(chunks: Vec<Bytes>) -> RecordSet {
        RecordSet {
            chunks: chunks.into_iter().filter(|c| !c.is_empty()).collect(),
        }
    }

    /// Total bytes.
    pub fn len(&self) -> usize {
        self.chunks.iter().map(|c| c.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// The buffers, in order, none empty.
    pub fn chunks(&self) -> &[Bytes] {
        &self.chunks
    }

    /// The data as one buffer: the only chunk itself (no copy), else the chunks joined.
    pub fn to_bytes(&self) -> Bytes {
        match self.chunks.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            many => {
                let mut out = BytesMut::with_capacity(self.len());
                for c in many {
                    out.extend_from_slice(c);
                }
                out.freeze()
            }
        }
    }
}

impl From<Bytes> for RecordSet {
    fn from(b: Bytes) -> RecordSet {
        RecordSet::from_chunks(vec![b])
    }
}

impl PartialEq for RecordSet {
    fn eq(&self, other: &RecordSet) -> bool {
        self.len() == other.len()
            && self
                .chunks
                .iter()
                .flat_map(|c| c.iter())
                .eq(other.chunks.iter().flat_map(|c| c.iter()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_chunk_is_returned_without_a_copy() {
        let b = Bytes::from(vec![7u8; 100]);
        let set = RecordSet::from(b.clone());
        assert_eq!(set.to_bytes().as_ptr(), b.as_ptr());
        assert_eq!(set.len(), 100);
    }

    #[test]
    fn chunks_join_in_order_and_empty_ones_drop() {
        let set = RecordSet::from_chunks(vec![
            Bytes::from_static(b"ab"),
            Bytes::new(),
            Bytes::from_static(b"cde"),
        ]);
        assert_eq!(set.chunks().len(), 2);
        assert_eq!(set.len(), 5);
        assert_eq!(&set.to_bytes()[..], b"abcde");
        assert!(RecordSet::from_chunks(vec![Bytes::new()]).is_empty());
    }

    /// Large chunks go out as the very buffers given (no join), after one length that covers
    /// them all; decoding gives the same bytes back as one buffer.
    #[test]
    fn large_chunks_are_encoded_shared_under_one_length() {
        use crate::protocol::codec::Field;
        use crate::protocol::wire::{Reader, Writer, SHARED_CHUNK_MIN};
        let a = Bytes::from(vec![1u8; SHARED_CHUNK_MIN]);
        let b = Bytes::from(vec![2u8; SHARED_CHUNK_MIN + 5]);
        let set = Some(RecordSet::from_chunks(vec![a.clone(), b.clone()]));
        for flexible in [false, true] {
            let mut w = Writer::new();
            set.write(&mut w, 12, flexible);
            let chunks = w.clone().finish();
            assert_eq!(chunks.len(), 3, "length, then the two buffers");
            assert_eq!(chunks[1].as_ptr(), a.as_ptr());
            assert_eq!(chunks[2].as_ptr(), b.as_ptr());
            let mut r = Reader::new(Bytes::from(w.into_vec()));
            let back = Option::<RecordSet>::read(&mut r, 12, flexible).expect("decode");
            assert_eq!(back, set);
            assert_eq!(back.map(|s| s.chunks().len()), Some(1));
        }
    }

    #[test]
    fn equality_is_by_content_not_split() {
        let split =
            RecordSet::from_chunks(vec![Bytes::from_static(b"ab"), Bytes::from_static(b"c")]);
        assert_eq!(split, RecordSet::from(Bytes::from_static(b"abc")));
        assert_ne!(split, RecordSet::from(Bytes::from_static(b"abd")));
        assert_ne!(split, RecordSet::from(Bytes::from_static(b"ab")));
    }
}
