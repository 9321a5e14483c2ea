//! The Redis value of a URL's variants: a small length-prefixed binary form, read back
//! defensively (anything malformed is a miss).

use super::*;

const VERSION: u8 = 1;

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

pub fn encode(variants: &[Arc<Stored>]) -> Vec<u8> {
    let mut out = vec![VERSION, variants.len() as u8];
    for v in variants {
        out.extend_from_slice(&v.status.as_u16().to_be_bytes());
        out.extend_from_slice(&v.born_ms.to_be_bytes());
        out.extend_from_slice(&v.fresh_ms.to_be_bytes());
        out.extend_from_slice(&(v.vary.len() as u32).to_be_bytes());
        for (n, val) in &v.vary {
            put_bytes(&mut out, n.as_str().as_bytes());
            match val {
                Some(val) => {
                    out.push(1);
                    put_bytes(&mut out, val);
                }
                None => out.push(0),
            }
        }
        out.extend_from_slice(&(v.headers.len() as u32).to_be_bytes());
        for (n, val) in &v.headers {
            put_bytes(&mut out, n.as_str().as_bytes());
            put_bytes(&mut out, val.as_bytes());
        }
        put_bytes(&mut out, &v.body);
    }
    out
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

/// `None` for anything malformed: a value Weir did not write is a miss.
pub fn decode(raw: &[u8]) -> Option<Vec<Arc<Stored>>> {
    let mut r = Reader(raw);
    if r.u8()? != VERSION {
        return None;
    }
    let count = r.u8()? as usize;
    let mut out = Vec::with_capacity(count.min(MAX_VARIANTS));
    for _ in 0..count {
        let status = StatusCode::from_u16(r.u16()?).ok()?;
        let born_ms = r.u64()?;
        let fresh_ms = r.u64()?;
        let nvary = r.u32()? as usize;
        let mut vary = Vec::with_capacity(nvary.min(MAX_VARY));
        for _ in 0..nvary {
            let n = HeaderName::from_bytes(r.bytes()?).ok()?;
            let v = match r.u8()? {
                1 => Some(Bytes::copy_from_slice(r.bytes()?)),
                _ => None,
            };
            vary.push((n, v));
        }
        let nh = r.u32()? as usize;
        let mut headers = HeaderMap::with_capacity(nh.min(64));
        for _ in 0..nh {
            let n = HeaderName::from_bytes(r.bytes()?).ok()?;
            let v = HeaderValue::from_bytes(r.bytes()?).ok()?;
            headers.append(n, v);
        }
        let body = Bytes::copy_from_slice(r.bytes()?);
        out.push(Arc::new(Stored {
            status,
            headers,
            body,
            born_ms,
            fresh_ms,
            vary,
        }));
    }
    Some(out)
}
