//! A transaction's branches packed into one value of its global row (ADR 26), for a backend
//! that stores them there instead of in `trans_branch_op` rows (SQLite). Pure: encoding,
//! decoding, and the two changes a write makes (apply a save's updates, append a
//! registration's branches), each checked as the row layout's keys checked them.
//!
//! Format (all integers LEB128; signed ones zigzag): a version byte, the branch count, then
//! per branch `branch_id`, `op`, `url` (length-prefixed text), `payload` (length-prefixed
//! bytes), `status` (text), `attempts`, `last_error` (text), `create_time`, `update_time`,
//! `finish_time + 1` (0 = none). A branch's id is its position, from 1: ids ascend in the
//! order the branches were added, as row ids did.
//!
//! An update list (what a save changes) is packed the same way: a version byte, `now`, the
//! count, then per update its id (0 = not known), `branch_id`, `op`, `status`, `attempts`,
//! `last_error`, `finish_time + 1`.

use dtx_core::{Branch, Timestamp};

use crate::BranchUpdate;

/// The first byte of every packed value: a later format gets another.
const VERSION: u8 = 1;

/// Why a packed value could not be read or changed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PackedError {
    /// The bytes are not a packed value of this version (a corrupt row).
    #[error("packed branches are corrupt: {0}")]
    Corrupt(&'static str),
    /// An update names a branch the transaction does not have (an engine bug).
    #[error("no branch {branch_id}/{op}")]
    Missing {
        /// The branch named.
        branch_id: String,
        /// Its op.
        op: String,
    },
    /// The transaction's branches are rows, not packed (its value is empty): a backend that
    /// keeps large transactions in rows changes them there.
    #[error("the branches are rows")]
    Rows,
    /// The branches would grow beyond the limit given to [`append`]: the backend moves them
    /// to rows.
    #[error("the packed branches would exceed {0} bytes")]
    Full(usize),
    /// A branch to add is there already (a registration sent twice).
    #[error("branch {branch_id}/{op} already exists")]
    Duplicate {
        /// The branch named.
        branch_id: String,
        /// Its op.
        op: String,
    },
}

/// Packs branches, ids ignored (they are positions).
pub fn encode(branches: &[Branch]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(16 + branches.iter().map(|b| 48 + b.url.len() + b.payload.len()).sum::<usize>());
    out.push(VERSION);
    uint(&mut out, branches.len() as u64);
    for b in branches {
        put_branch(&mut out, b);
    }
    out
}

/// Unpacks branches, with their positions (from 1) as ids. An empty value (a transaction
/// whose branches are rows) is none: callers tell that case apart first.
pub fn decode(bytes: &[u8]) -> Result<Vec<Branch>, PackedError> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let mut r = Reader::new(bytes)?;
    let n = r.len()?;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut b = r.branch()?;
        b.id = i as i64 + 1;
        out.push(b);
    }
    r.end()?;
    Ok(out)
}

/// Packs a save's branch updates, written at `now`.
pub fn encode_updates(now: Timestamp, updates: &[BranchUpdate]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + updates.iter().map(|u| 32 + u.last_error.len()).sum::<usize>());
    out.push(VERSION);
    int(&mut out, now.as_millis());
    uint(&mut out, updates.len() as u64);
    for u in updates {
        uint(&mut out, u.id.max(0) as u64);
        text(&mut out, &u.branch_id);
        text(&mut out, u.op.as_str());
        text(&mut out, u.status.as_str());
        uint(&mut out, u64::from(u.attempts));
        text(&mut out, &u.last_error);
        opt_time(&mut out, u.finish_time);
    }
    out
}

/// Applies packed updates to packed branches. Each update finds its branch by id when the id
/// names that branch, else by `(branch_id, op)`; one that finds none fails the whole change.
/// Branches that are rows (an empty value) are [`PackedError::Rows`].
///
/// Works on the bytes: a branch no update names is copied as it is, and an updated one keeps
/// its bytes up to its status (so no branch is decoded into owned strings; this runs inside
/// SQLite's write of every save, ADR 26).
pub fn apply(branches: &[u8], updates: &[u8]) -> Result<Vec<u8>, PackedError> {
    if branches.is_empty() {
        return Err(PackedError::Rows);
    }
    let (spans, _) = spans(branches)?;
    let mut r = Reader::new(updates)?;
    let now = Timestamp(r.int()?);
    // Per branch, the last update that names it (each update sets every field it carries).
    let mut chosen: Vec<Option<Update<'_>>> = vec![None; spans.len()];
    for _ in 0..r.len()? {
        let id = r.uint()?;
        let branch_id = r.text()?;
        let op = r.text()?;
        let status = r.text()?;
        status.parse::<dtx_core::BranchStatus>().map_err(|_| PackedError::Corrupt("branch status"))?;
        let attempts = u32::try_from(r.uint()?).map_err(|_| PackedError::Corrupt("attempts"))?;
        let last_error = r.text()?;
        let finish_time = r.opt_time()?;
        let named = |s: &Span<'_>| s.branch_id == branch_id.as_bytes() && s.op == op.as_bytes();
        let by_id = usize::try_from(id)
            .ok()
            .and_then(|id| id.checked_sub(1))
            .filter(|&i| spans.get(i).is_some_and(named));
        let Some(at) = by_id.or_else(|| spans.iter().position(named)) else {
            return Err(PackedError::Missing { branch_id: branch_id.to_owned(), op: op.to_owned() });
        };
        chosen[at] = Some(Update { status, attempts, last_error, finish_time });
    }
    r.end()?;
    let mut out = Vec::with_capacity(branches.len() + 64);
    let body = spans.first().map_or(branches.len(), |s| s.start);
    out.extend_from_slice(&branches[..body]);
    for (s, u) in spans.iter().zip(&chosen) {
        match u {
            None => out.extend_from_slice(&branches[s.start..s.end]),
            Some(u) => {
                out.extend_from_slice(&branches[s.start..s.state]);
                text(&mut out, u.status);
                uint(&mut out, u64::from(u.attempts));
                text(&mut out, u.last_error);
                int(&mut out, s.create_time);
                int(&mut out, now.as_millis());
                opt_time(&mut out, u.finish_time);
            }
        }
    }
    Ok(out)
}

/// Appends packed branches (a registration's) to packed branches. A `(branch_id, op)` already
/// there, or given twice, fails the whole change; so does a result longer than `limit` bytes
/// ([`PackedError::Full`]), and branches that are rows ([`PackedError::Rows`]). The branches
/// are copied as they are (see [`apply`]).
pub fn append(branches: &[u8], added: &[u8], limit: usize) -> Result<Vec<u8>, PackedError> {
    if branches.is_empty() {
        return Err(PackedError::Rows);
    }
    let (old, old_body) = spans(branches)?;
    let (new, new_body) = spans(added)?;
    for (i, b) in new.iter().enumerate() {
        let seen = |o: &Span<'_>| o.branch_id == b.branch_id && o.op == b.op;
        if old.iter().any(seen) || new[..i].iter().any(seen) {
            return Err(PackedError::Duplicate {
                branch_id: String::from_utf8_lossy(b.branch_id).into_owned(),
                op: String::from_utf8_lossy(b.op).into_owned(),
            });
        }
    }
    let mut out = Vec::with_capacity(branches.len() + added.len());
    out.push(VERSION);
    uint(&mut out, (old.len() + new.len()) as u64);
    out.extend_from_slice(&branches[old_body..]);
    out.extend_from_slice(&added[new_body..]);
    if out.len() > limit {
        return Err(PackedError::Full(limit));
    }
    Ok(out)
}

/// One update of [`apply`], read from its packed list.
#[derive(Clone, Copy)]
struct Update<'a> {
    status: &'a str,
    attempts: u32,
    last_error: &'a str,
    finish_time: Option<Timestamp>,
}

/// Where one packed branch lies in a value, and what [`apply`] and [`append`] read of it.
struct Span<'a> {
    start: usize,
    branch_id: &'a [u8],
    op: &'a [u8],
    /// The first byte of its status: the fields a save rewrites start here.
    state: usize,
    create_time: i64,
    end: usize,
}

/// The branches of a non-empty packed value, and where the first one starts. Checks the
/// structure (every length within the value, no trailing bytes), not the texts.
fn spans(bytes: &[u8]) -> Result<(Vec<Span<'_>>, usize), PackedError> {
    let mut r = Reader::new(bytes)?;
    let n = r.len()?;
    let body = r.at;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let start = r.at;
        let branch_id = r.bytes()?;
        let op = r.bytes()?;
        r.bytes()?; // url
        r.bytes()?; // payload
        let state = r.at;
        r.bytes()?; // status
        r.uint()?; // attempts
        r.bytes()?; // last_error
        let create_time = r.int()?;
        r.int()?; // update_time
        r.uint()?; // finish_time + 1
        out.push(Span { start, branch_id, op, state, create_time, end: r.at });
    }
    r.end()?;
    Ok((out, body))
}

/// The first `(branch_id, op)` given twice in `branches`, if any (a create's own check: the
/// row layout's unique key did it).
pub fn first_duplicate(branches: &[Branch]) -> Option<&Branch> {
    branches
        .iter()
        .enumerate()
        .find(|(i, b)| branches[..*i].iter().any(|o| o.branch_id == b.branch_id && o.op == b.op))
        .map(|(_, b)| b)
}

fn put_branch(out: &mut Vec<u8>, b: &Branch) {
    text(out, &b.branch_id);
    text(out, b.op.as_str());
    text(out, &b.url);
    uint(out, b.payload.len() as u64);
    out.extend_from_slice(&b.payload);
    text(out, b.status.as_str());
    uint(out, u64::from(b.attempts));
    text(out, &b.last_error);
    int(out, b.create_time.as_millis());
    int(out, b.update_time.as_millis());
    opt_time(out, b.finish_time);
}

fn uint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn int(out: &mut Vec<u8>, v: i64) {
    uint(out, ((v << 1) ^ (v >> 63)) as u64);
}

fn text(out: &mut Vec<u8>, s: &str) {
    uint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn opt_time(out: &mut Vec<u8>, t: Option<Timestamp>) {
    // Times are milliseconds since 1970: `+ 1` cannot overflow for any real one.
    uint(out, t.map_or(0, |t| (t.as_millis().max(0) as u64).saturating_add(1)));
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Result<Reader<'a>, PackedError> {
        match bytes.first() {
            Some(&VERSION) => Ok(Reader { bytes, at: 1 }),
            Some(_) => Err(PackedError::Corrupt("unknown version")),
            None => Err(PackedError::Corrupt("empty")),
        }
    }

    fn uint(&mut self) -> Result<u64, PackedError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.bytes.get(self.at).ok_or(PackedError::Corrupt("truncated"))?;
            self.at += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(PackedError::Corrupt("integer too long"))
    }

    fn int(&mut self) -> Result<i64, PackedError> {
        let z = self.uint()?;
        Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    /// A count or length, bounded by the bytes left (so a corrupt one allocates nothing).
    fn len(&mut self) -> Result<usize, PackedError> {
        let n = self.uint()?;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.bytes.len() - self.at)
            .ok_or(PackedError::Corrupt("length beyond the value"))
    }

    fn bytes(&mut self) -> Result<&'a [u8], PackedError> {
        let n = self.len()?;
        let s = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    fn text(&mut self) -> Result<&'a str, PackedError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| PackedError::Corrupt("text not utf-8"))
    }

    fn name<T: std::str::FromStr>(&mut self, what: &'static str) -> Result<T, PackedError> {
        self.text()?.parse().map_err(|_| PackedError::Corrupt(what))
    }

    fn opt_time(&mut self) -> Result<Option<Timestamp>, PackedError> {
        let v = self.uint()?;
        Ok(v.checked_sub(1).map(|t| Timestamp(t as i64)))
    }

    fn branch(&mut self) -> Result<Branch, PackedError> {
        let branch_id = self.text()?.to_owned();
        let op = self.name("op")?;
        let url = self.text()?.to_owned();
        let payload = self.bytes()?.to_vec();
        let status = self.name("branch status")?;
        let attempts = u32::try_from(self.uint()?).map_err(|_| PackedError::Corrupt("attempts"))?;
        let last_error = self.text()?.to_owned();
        let create_time = Timestamp(self.int()?);
        let update_time = Timestamp(self.int()?);
        let finish_time = self.opt_time()?;
        Ok(Branch {
            id: 0,
            branch_id,
            op,
            url,
            payload,
            status,
            attempts,
            last_error,
            create_time,
            update_time,
            finish_time,
        })
    }

    fn end(&self) -> Result<(), PackedError> {
        if self.at == self.bytes.len() { Ok(()) } else { Err(PackedError::Corrupt("trailing bytes")) }
    }
}

#[cfg(test)]
mod tests {
    use dtx_core::{BranchStatus, Op};

    use super::*;

    fn branch(id: &str, op: Op, payload: &[u8]) -> Branch {
        Branch::new(
            id.into(),
            op,
            format!("http://127.0.0.1:1/{id}"),
            payload.to_vec(),
            Timestamp(1_700_000_000_000),
        )
    }

    fn update(id: i64, branch_id: &str, op: Op) -> BranchUpdate {
        BranchUpdate {
            id,
            branch_id: branch_id.into(),
            op,
            status: BranchStatus::Succeed,
            attempts: 3,
            last_error: "boom".into(),
            finish_time: Some(Timestamp(1_700_000_000_500)),
        }
    }

    fn saga() -> Vec<Branch> {
        vec![
            branch("01", Op::Compensate, b"{\"a\":1}"),
            branch("01", Op::Action, &[0, 255, 7]),
            branch("02", Op::Compensate, b""),
            branch("02", Op::Action, "ünï".as_bytes()),
        ]
    }

    #[test]
    fn round_trips_with_positions_as_ids() {
        let mut b = saga();
        b[1].finish_time = Some(Timestamp(5));
        b[2].attempts = u32::MAX;
        b[3].create_time = Timestamp(-3);
        let back = decode(&encode(&b)).expect("decode");
        for (i, (got, want)) in back.iter().zip(&b).enumerate() {
            assert_eq!(got.id, i as i64 + 1);
            assert_eq!(Branch { id: 0, ..got.clone() }, *want);
        }
        assert_eq!(back.len(), 4);
        assert_eq!(decode(&[]).expect("empty"), Vec::<Branch>::new());
        assert_eq!(decode(&encode(&[])).expect("none"), Vec::<Branch>::new());
    }

    #[test]
    fn corrupt_values_are_errors() {
        let good = encode(&saga());
        for cut in 1..good.len() {
            assert!(decode(&good[..cut]).is_err(), "truncated at {cut}");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert_eq!(decode(&longer), Err(PackedError::Corrupt("trailing bytes")));
        let mut other = good.clone();
        other[0] = 2;
        assert_eq!(decode(&other), Err(PackedError::Corrupt("unknown version")));
        // A count far beyond the bytes allocates nothing.
        assert!(decode(&[VERSION, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
    }

    #[test]
    fn updates_find_their_branch_by_id_or_key() {
        let packed = encode(&saga());
        let now = Timestamp(1_700_000_000_400);
        // By id; by key when the id is unknown (0) or names another branch.
        for id in [2, 0, 3, 99] {
            let out = decode(
                &apply(&packed, &encode_updates(now, &[update(id, "01", Op::Action)])).expect("apply"),
            )
            .expect("decode");
            let b = &out[1];
            assert_eq!((b.status, b.attempts, b.last_error.as_str()), (BranchStatus::Succeed, 3, "boom"));
            assert_eq!((b.update_time, b.finish_time), (now, Some(Timestamp(1_700_000_000_500))));
            assert_eq!(out[0], decode(&packed).expect("decode")[0], "id {id} changed another branch");
            assert_eq!(out.len(), 4);
        }
        let missing = apply(&packed, &encode_updates(now, &[update(1, "01", Op::Try)]));
        assert_eq!(missing, Err(PackedError::Missing { branch_id: "01".into(), op: "try".into() }));
        assert_eq!(
            apply(&encode(&[]), &encode_updates(now, &[update(0, "01", Op::Action)])),
            Err(PackedError::Missing { branch_id: "01".into(), op: "action".into() })
        );
        assert_eq!(apply(&[], &encode_updates(now, &[update(0, "01", Op::Action)])), Err(PackedError::Rows));
        assert_eq!(apply(&packed, &encode_updates(now, &[])).expect("none"), packed);
    }

    /// What `apply` did before it worked on the bytes: decode, change, encode.
    fn apply_by_decoding(branches: &[u8], now: Timestamp, updates: &[BranchUpdate]) -> Vec<u8> {
        let mut all = decode(branches).expect("decode");
        for u in updates {
            let key = |b: &Branch| b.branch_id == u.branch_id && b.op == u.op;
            let at = usize::try_from(u.id - 1)
                .ok()
                .filter(|&i| all.get(i).is_some_and(key))
                .or_else(|| all.iter().position(key))
                .expect("named branch");
            let b = &mut all[at];
            (b.status, b.attempts, b.last_error) = (u.status, u.attempts, u.last_error.clone());
            (b.update_time, b.finish_time) = (now, u.finish_time);
        }
        encode(&all)
    }

    #[test]
    fn applying_on_the_bytes_equals_decoding_changing_encoding() {
        let mut base = saga();
        base[0].last_error = "an earlier error".into();
        base[2].finish_time = Some(Timestamp(9));
        let packed = encode(&base);
        let now = Timestamp(1_700_000_000_900);
        let mut again = update(1, "01", Op::Compensate);
        again.status = BranchStatus::Failed;
        again.last_error = String::new();
        again.finish_time = None;
        let cases: Vec<Vec<BranchUpdate>> = vec![
            vec![update(1, "01", Op::Compensate)],
            vec![update(4, "02", Op::Action), update(0, "01", Op::Action)],
            // The same branch twice: the later update wins, as when applied in turn.
            vec![update(1, "01", Op::Compensate), again.clone()],
            vec![again, update(3, "02", Op::Compensate), update(2, "01", Op::Action)],
        ];
        for updates in cases {
            let got = apply(&packed, &encode_updates(now, &updates)).expect("apply");
            assert_eq!(got, apply_by_decoding(&packed, now, &updates), "{updates:?}");
        }
        // A corrupt value or update list is an error, never a panic or a partial change.
        let updates = encode_updates(now, &[update(2, "01", Op::Action)]);
        for cut in 1..packed.len() {
            assert!(apply(&packed[..cut], &updates).is_err(), "branches truncated at {cut}");
            assert!(append(&packed[..cut], &encode(&saga()[..1]), 4096).is_err(), "truncated at {cut}");
        }
        for cut in 1..updates.len() {
            assert!(apply(&packed, &updates[..cut]).is_err(), "updates truncated at {cut}");
        }
    }

    #[test]
    fn appends_refuse_a_branch_twice() {
        let first = encode(&saga()[..2]);
        let more = encode(&saga()[2..]);
        let all = decode(&append(&first, &more, 4096).expect("append")).expect("decode");
        assert_eq!(all.iter().map(|b| b.id).collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert_eq!(all[3].payload, "ünï".as_bytes());
        assert_eq!(append(&encode(&[]), &more, 4096).map(|v| decode(&v).map(|b| b.len())), Ok(Ok(2)));
        assert_eq!(append(&[], &more, 4096), Err(PackedError::Rows));
        let whole = encode(&saga());
        assert_eq!(append(&first, &more, whole.len()).map(|v| v == whole), Ok(true));
        assert_eq!(append(&first, &more, whole.len() - 1), Err(PackedError::Full(whole.len() - 1)));
        let again = append(&first, &encode(&saga()[1..3]), 4096);
        assert_eq!(again, Err(PackedError::Duplicate { branch_id: "01".into(), op: "action".into() }));
        let twice = append(&first, &encode(&[saga()[2].clone(), saga()[2].clone()]), 4096);
        assert_eq!(twice, Err(PackedError::Duplicate { branch_id: "02".into(), op: "compensate".into() }));
        assert!(first_duplicate(&saga()).is_none());
        let dup = [saga()[0].clone(), saga()[1].clone(), saga()[0].clone()];
        assert_eq!(first_duplicate(&dup).map(|b| b.op), Some(Op::Compensate));
    }
}
