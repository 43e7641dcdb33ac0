//! Walking a protobuf encoding without decoding it: the proxy's raw paths
//! ([`super::raw_receive`], [`super::raw_ack`]) find the one field they change (a receipt
//! handle, a few levels down) and copy every other byte as it is.
//!
//! Only what those paths need: the fields of one level with their places, the one
//! length-delimited field of a number, a varint field's value, and writing a length header.
//! Nothing here allocates.

use bytes::BufMut;

/// Reads a varint at `*pos`, advancing it; `None` if it is cut short or too long (more than ten
/// bytes, or a tenth byte above 1: more than 64 bits, which prost refuses too).
fn read_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    // Keys and short lengths take one byte: most of what a walk reads.
    let first = *buf.get(*pos)?;
    if first < 0x80 {
        *pos += 1;
        return Some(u64::from(first));
    }
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        if shift == 63 && b > 1 {
            return None;
        }
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// One field of an encoding: its number, wire type, where it starts, and where its value
/// (the payload, for length-delimited fields) starts and ends.
pub struct Field {
    pub number: u32,
    pub wire: u8,
    pub start: usize,
    pub value: std::ops::Range<usize>,
}

impl Field {
    /// Whether this is the length-delimited field `number`.
    pub fn is_len(&self, number: u32) -> bool {
        self.number == number && self.wire == 2
    }

    pub fn place(&self) -> Place {
        Place {
            key: self.start,
            payload: self.value.start,
            len: self.value.len(),
        }
    }
}

/// The fields of an encoded message, in order; stops (`None` item) at the first malformed one
/// (cut short, a wire type that is not 0, 1, 2 or 5, a field number out of range, a varint past
/// 64 bits).
pub fn fields(buf: &[u8]) -> impl Iterator<Item = Option<Field>> + '_ {
    let mut pos = 0;
    let mut broken = false;
    std::iter::from_fn(move || {
        if broken || pos >= buf.len() {
            return None;
        }
        let start = pos;
        let f = (|| {
            let key = read_varint(buf, &mut pos)?;
            // Field numbers run from 1 to 2^29 - 1; prost refuses any other as malformed.
            let number = u32::try_from(key >> 3)
                .ok()
                .filter(|n| (1..1 << 29).contains(n))?;
            let wire = (key & 7) as u8;
            let value = match wire {
                0 => {
                    let from = pos;
                    read_varint(buf, &mut pos)?;
                    from..pos
                }
                1 => pos..pos.checked_add(8)?,
                2 => {
                    let len = usize::try_from(read_varint(buf, &mut pos)?).ok()?;
                    pos..pos.checked_add(len)?
                }
                5 => pos..pos.checked_add(4)?,
                _ => return None,
            };
            if value.end > buf.len() {
                return None;
            }
            pos = value.end;
            Some(Field {
                number,
                wire,
                start,
                value,
            })
        })();
        broken = f.is_none();
        Some(f)
    })
}

/// A length-delimited field's place in the buffer it was found in: where its key starts,
/// where its payload starts, and the payload's length.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Place {
    pub key: usize,
    pub payload: usize,
    pub len: usize,
}

impl Place {
    /// The same place in a buffer that holds this one's at `offset`.
    pub fn shifted(self, offset: usize) -> Place {
        Place {
            key: self.key + offset,
            payload: self.payload + offset,
            len: self.len,
        }
    }

    pub fn payload_range(&self) -> std::ops::Range<usize> {
        self.payload..self.payload + self.len
    }
}

/// What [`one_len_field`] found.
#[derive(Debug, PartialEq)]
pub enum One {
    Found(Place),
    Absent,
    /// Given more than once (a decoder merges or keeps the last; a raw path does not guess).
    Repeated,
    /// The level does not parse.
    Malformed,
}

/// The one length-delimited field `number` of `buf`'s top level.
pub fn one_len_field(buf: &[u8], number: u32) -> One {
    let mut found = One::Absent;
    for f in fields(buf) {
        let Some(f) = f else {
            return One::Malformed;
        };
        if f.is_len(number) {
            if found != One::Absent {
                return One::Repeated;
            }
            found = One::Found(f.place());
        }
    }
    found
}

/// The payload of the last length-delimited field `number` (the one a decoder keeps).
pub fn find_field(buf: &[u8], number: u32) -> Option<&[u8]> {
    let mut found = None;
    for f in fields(buf) {
        let f = f?;
        if f.is_len(number) {
            found = Some(&buf[f.value]);
        }
    }
    found
}

/// The value of the last varint field `number`.
pub fn find_varint(buf: &[u8], number: u32) -> Option<u64> {
    let mut found = None;
    for f in fields(buf) {
        let f = f?;
        if f.number == number && f.wire == 0 {
            let mut p = f.value.start;
            found = read_varint(buf, &mut p);
        }
    }
    found
}

/// The code of the `Status` message in length-delimited field `status_field` of an answer
/// (`Status.code` is field 1); `None` when the answer carries no status.
pub fn status_code(answer: &[u8], status_field: u32) -> Option<i32> {
    let status = find_field(answer, status_field)?;
    Some(find_varint(status, 1).unwrap_or(0) as i32)
}

/// Bytes of `v` as a varint.
pub fn varint_len(v: usize) -> usize {
    prost::encoding::encoded_len_varint(v as u64)
}

/// A length-delimited field's key and length.
pub fn put_len_header(out: &mut impl BufMut, number: u32, len: usize) {
    prost::encoding::encode_varint((u64::from(number) << 3) | 2, out);
    prost::encoding::encode_varint(len as u64, out);
}

/// `raw` cut at `cut` (when given) and with the byte at each position of `flips` (modulo its
/// length) replaced: the damaged inputs the walks' proptests try.
#[cfg(test)]
pub fn damaged(mut raw: Vec<u8>, cut: Option<usize>, flips: &[(usize, u8)]) -> Vec<u8> {
    if let Some(c) = cut {
        raw.truncate(c.min(raw.len()));
    }
    for (at, b) in flips {
        if !raw.is_empty() {
            let i = at % raw.len();
            raw[i] = *b;
        }
    }
    raw
}

/// A whole length-delimited field, for tests and for answers built by hand.
#[cfg(test)]
pub fn put_len_field(out: &mut impl BufMut, number: u32, payload: &[u8]) {
    put_len_header(out, number, payload.len());
    out.put_slice(payload);
}

/// `buf` with the payload of every length-delimited field `number` replaced by what `f` makes
/// of it; `None` when `buf` does not parse, the field is absent, or `f` declines.
pub fn rewrite_len_field(
    buf: &[u8],
    number: u32,
    f: &mut dyn FnMut(&[u8]) -> Option<Vec<u8>>,
) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(buf.len() + 64);
    let mut hit = false;
    for field in fields(buf) {
        let field = field?;
        if field.is_len(number) {
            let new = f(&buf[field.value.clone()])?;
            put_len_header(&mut out, number, new.len());
            out.extend_from_slice(&new);
            hit = true;
        } else {
            out.extend_from_slice(&buf[field.start..field.value.end]);
        }
    }
    hit.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_field_is_told_apart_from_none_two_and_garbage() {
        let mut b = Vec::new();
        put_len_field(&mut b, 1, b"abc");
        prost::encoding::encode_varint(2 << 3, &mut b); // field 2, a varint
        prost::encoding::encode_varint(300, &mut b);
        put_len_field(&mut b, 3, &[7u8; 200]);
        let Some(One::Found(p)) = Some(one_len_field(&b, 3)) else {
            panic!("field 3 is there once");
        };
        assert_eq!(&b[p.payload_range()], &[7u8; 200][..]);
        assert_eq!(p.payload - p.key, 3, "a one-byte key and a two-byte length");
        assert_eq!(
            one_len_field(&b, 2),
            One::Absent,
            "a varint is not length-delimited"
        );
        assert_eq!(find_varint(&b, 2), Some(300));
        assert_eq!(one_len_field(&b, 9), One::Absent);
        let mut twice = b.clone();
        put_len_field(&mut twice, 1, b"again");
        assert_eq!(one_len_field(&twice, 1), One::Repeated);
        assert_eq!(
            find_field(&twice, 1),
            Some(&b"again"[..]),
            "the last one wins"
        );
        assert_eq!(one_len_field(&b[..b.len() - 1], 3), One::Malformed);
        // Field number 0 and 2^29 are refused, as prost refuses them; 2^29 - 1 is read.
        assert!(matches!(fields(&[0x02, 0x00]).next(), Some(None)));
        let mut past = Vec::new();
        prost::encoding::encode_varint(((1u64 << 29) << 3) | 2, &mut past);
        past.push(0);
        assert!(matches!(fields(&past).next(), Some(None)));
        let mut last = Vec::new();
        put_len_field(&mut last, (1 << 29) - 1, b"x");
        assert!(matches!(fields(&last).next(), Some(Some(f)) if f.number == (1 << 29) - 1));
    }
}
