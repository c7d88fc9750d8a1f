//! The consumer protocol embedded in JoinGroup and SyncGroup bytes (Kafka's
//! `ConsumerProtocolSubscription` and `ConsumerProtocolAssignment`, version 0), and Kafka's
//! range assignor, for clients of the classic group protocol (the command line, the bench).
//! Big-endian, strings with an i16 length, arrays with an i32 count, bytes with an i32 length
//! (-1 = null):
//!
//! ```text
//! subscription: version i16 | topics [string]                      | user_data bytes
//! assignment:   version i16 | [topic string | partitions [i32]]    | user_data bytes
//! ```
//!
//! Decoding is bounded: a count larger than the bytes left is an error, not an allocation.

use std::collections::BTreeMap;

use bytes::Bytes;

/// Bytes that are not a valid subscription or assignment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {what}: {detail}")]
pub struct ConsumerProtocolError {
    pub what: &'static str,
    pub detail: String,
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as i16).to_be_bytes());
    b.extend_from_slice(s.as_bytes());
}

/// A cursor over embedded protocol bytes; every read is bounds-checked.
struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ConsumerProtocolError> {
        if self.b.len() - self.pos < n {
            return Err(ConsumerProtocolError {
                what: self.what,
                detail: format!("{n} bytes wanted at {}, {} present", self.pos, self.b.len()),
            });
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn i16(&mut self) -> Result<i16, ConsumerProtocolError> {
        let s = self.take(2)?;
        Ok(i16::from_be_bytes([s[0], s[1]]))
    }
    fn i32(&mut self) -> Result<i32, ConsumerProtocolError> {
        let s = self.take(4)?;
        Ok(i32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn string(&mut self) -> Result<String, ConsumerProtocolError> {
        let n = self.i16()?;
        if n < 0 {
            return Err(ConsumerProtocolError {
                what: self.what,
                detail: "null string".into(),
            });
        }
        let s = self.take(n as usize)?;
        String::from_utf8(s.to_vec()).map_err(|e| ConsumerProtocolError {
            what: self.what,
            detail: e.to_string(),
        })
    }
    /// An array count, checked against the bytes left (each element takes at least `min` bytes).
    fn count(&mut self, min: usize) -> Result<usize, ConsumerProtocolError> {
        let n = self.i32()?;
        if n < 0 || (n as usize).saturating_mul(min) > self.b.len() - self.pos {
            return Err(ConsumerProtocolError {
                what: self.what,
                detail: format!(
                    "array count {n} with {} bytes left",
                    self.b.len() - self.pos
                ),
            });
        }
        Ok(n as usize)
    }
}

/// ConsumerProtocolSubscription v0 with null user data.
pub fn encode_subscription(topics: &[String]) -> Bytes {
    let mut b = Vec::new();
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(topics.len() as i32).to_be_bytes());
    for t in topics {
        put_str(&mut b, t);
    }
    b.extend_from_slice(&(-1i32).to_be_bytes());
    Bytes::from(b)
}

/// The topics of a ConsumerProtocolSubscription (any version: later versions only append
/// fields after the topics).
pub fn decode_subscription(b: &[u8]) -> Result<Vec<String>, ConsumerProtocolError> {
    let mut c = Cursor {
        b,
        pos: 0,
        what: "subscription",
    };
    let _version = c.i16()?;
    let n = c.count(2)?;
    (0..n).map(|_| c.string()).collect()
}

/// ConsumerProtocolAssignment v0 with null user data.
pub fn encode_assignment(a: &BTreeMap<String, Vec<i32>>) -> Bytes {
    let mut b = Vec::new();
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(a.len() as i32).to_be_bytes());
    for (t, parts) in a {
        put_str(&mut b, t);
        b.extend_from_slice(&(parts.len() as i32).to_be_bytes());
        for p in parts {
            b.extend_from_slice(&p.to_be_bytes());
        }
    }
    b.extend_from_slice(&(-1i32).to_be_bytes());
    Bytes::from(b)
}

/// The (topic, partitions) of a ConsumerProtocolAssignment; empty bytes = nothing assigned.
pub fn decode_assignment(b: &[u8]) -> Result<BTreeMap<String, Vec<i32>>, ConsumerProtocolError> {
    let mut out = BTreeMap::new();
    if b.is_empty() {
        return Ok(out);
    }
    let mut c = Cursor {
        b,
        pos: 0,
        what: "assignment",
    };
    let _version = c.i16()?;
    let n = c.count(6)?;
    for _ in 0..n {
        let t = c.string()?;
        let k = c.count(4)?;
        let parts = (0..k).map(|_| c.i32()).collect::<Result<Vec<_>, _>>()?;
        out.entry(t).or_insert_with(Vec::new).extend(parts);
    }
    Ok(out)
}

/// Kafka's RangeAssignor: per topic, the subscribed members sorted by member id; with n
/// partitions and m members, member i gets n/m consecutive partitions, and the first n%m members
/// one more. `partitions` gives each topic's partition count (topics missing from it are skipped,
/// as the Java client skips topics without metadata). Every member gets an entry.
pub fn range_assign(
    subscriptions: &[(String, Vec<String>)],
    partitions: &BTreeMap<String, i32>,
) -> BTreeMap<String, BTreeMap<String, Vec<i32>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Vec<i32>>> = subscriptions
        .iter()
        .map(|(m, _)| (m.clone(), BTreeMap::new()))
        .collect();
    for (topic, &n) in partitions {
        let mut members: Vec<&String> = subscriptions
            .iter()
            .filter(|(_, ts)| ts.contains(topic))
            .map(|(m, _)| m)
            .collect();
        if members.is_empty() || n <= 0 {
            continue;
        }
        members.sort();
        members.dedup();
        let m = members.len() as i32;
        let (per, extra) = (n / m, n % m);
        let mut next = 0;
        for (i, member) in members.into_iter().enumerate() {
            let k = per + i32::from((i as i32) < extra);
            if k > 0 {
                if let Some(a) = out.get_mut(member) {
                    a.insert(topic.clone(), (next..next + k).collect());
                }
            }
            next += k;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subs(members: &[&str], topics: &[&str]) -> Vec<(String, Vec<String>)> {
        members
            .iter()
            .map(|m| {
                (
                    m.to_string(),
                    topics.iter().map(|t| t.to_string()).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn range_assignment_matches_kafka_range_assignor() {
        // Kafka's RangeAssignor: 7 partitions over 3 members sorted by id -> 3, 2, 2.
        let parts: BTreeMap<String, i32> = [("t".to_string(), 7)].into();
        let a = range_assign(&subs(&["c", "a", "b"], &["t"]), &parts);
        assert_eq!(a["a"]["t"], vec![0, 1, 2]);
        assert_eq!(a["b"]["t"], vec![3, 4]);
        assert_eq!(a["c"]["t"], vec![5, 6]);
        // More members than partitions: the last members get nothing, but an entry.
        let parts: BTreeMap<String, i32> = [("t".to_string(), 2)].into();
        let a = range_assign(&subs(&["a", "b", "c"], &["t"]), &parts);
        assert_eq!(a["a"]["t"], vec![0]);
        assert_eq!(a["b"]["t"], vec![1]);
        assert!(a["c"].is_empty());
    }

    #[test]
    fn consumer_protocol_round_trips_and_matches_kafka_bytes() {
        let topics = vec!["ab".to_string()];
        let s = encode_subscription(&topics);
        // version 0 | 1 topic | "ab" | null user data
        assert_eq!(
            &s[..],
            &[0, 0, 0, 0, 0, 1, 0, 2, b'a', b'b', 0xff, 0xff, 0xff, 0xff]
        );
        assert_eq!(decode_subscription(&s).unwrap(), topics);
        let a: BTreeMap<String, Vec<i32>> = [("ab".to_string(), vec![3, 4])].into();
        let b = encode_assignment(&a);
        assert_eq!(
            &b[..],
            &[
                0, 0, 0, 0, 0, 1, 0, 2, b'a', b'b', 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0xff, 0xff,
                0xff, 0xff
            ]
        );
        assert_eq!(decode_assignment(&b).unwrap(), a);
        assert!(decode_assignment(&[]).unwrap().is_empty());
        // A huge count with no bytes behind it is an error, not an allocation.
        assert!(decode_assignment(&[0, 0, 0x7f, 0xff, 0xff, 0xff]).is_err());
        assert!(decode_subscription(&[0, 0, 0, 0, 0, 1, 0, 9, b'x']).is_err());
    }
}
