//! Which branch a participant call is for: DTM's four keys (`gid`, `trans_type`, `branch_id`,
//! `op`), sent by the coordinator as query parameters (HTTP) or `dtm-*` metadata (gRPC).

use crate::Error;

/// The branch a participant is called for.
///
/// ```
/// use dtx_client::BranchInfo;
/// let b = BranchInfo::from_query("gid=g1&trans_type=saga&branch_id=01&op=compensate").unwrap();
/// assert_eq!((b.gid.as_str(), b.branch_id.as_str(), b.op.as_str()), ("g1", "01", "compensate"));
/// assert!(BranchInfo::from_query("gid=g1&op=action").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BranchInfo {
    /// The global transaction.
    pub gid: String,
    /// `saga`, `tcc`, `msg`, `xa`, `workflow`.
    pub trans_type: String,
    /// The branch id (`01`, `02`, `0201` for a nested TCC branch, `00` for the check-back).
    pub branch_id: String,
    /// `action`, `compensate`, `try`, `confirm`, `cancel`, `msg`...
    pub op: String,
    /// The coordinator's address, when the caller sent it (SDKs calling a TCC try do; the
    /// coordinator itself sends it empty).
    pub coordinator: String,
    /// XA: the URL the branch registers for phase two (`phase2_url`, gRPC `dtm-phase2_url`),
    /// sent by SDKs calling an XA branch's action; empty otherwise.
    pub phase2_url: String,
}

/// DTM strips these from values read off the wire (they could end a SQL statement or a line).
fn clean(s: &str) -> String {
    s.chars().filter(|c| !matches!(c, '\n' | '\r' | ';')).collect()
}

impl BranchInfo {
    /// The four keys; each must be non-empty (DTM: "invalid trans info").
    pub fn new(
        gid: impl AsRef<str>,
        trans_type: impl AsRef<str>,
        branch_id: impl AsRef<str>,
        op: impl AsRef<str>,
    ) -> Result<BranchInfo, Error> {
        let b = BranchInfo {
            gid: clean(gid.as_ref()),
            trans_type: clean(trans_type.as_ref()),
            branch_id: clean(branch_id.as_ref()),
            op: clean(op.as_ref()),
            coordinator: String::new(),
            phase2_url: String::new(),
        };
        for (k, v) in
            [("gid", &b.gid), ("trans_type", &b.trans_type), ("branch_id", &b.branch_id), ("op", &b.op)]
        {
            if v.is_empty() {
                return Err(Error::InvalidInput(format!("not a branch call: {k} is missing")));
            }
        }
        Ok(b)
    }

    /// Sets [`BranchInfo::coordinator`].
    pub fn with_coordinator(mut self, dtm: impl Into<String>) -> BranchInfo {
        self.coordinator = dtm.into();
        self
    }

    /// Sets [`BranchInfo::phase2_url`].
    pub fn with_phase2_url(mut self, url: impl Into<String>) -> BranchInfo {
        self.phase2_url = url.into();
        self
    }

    /// Reads a URL query string (`gid=...&trans_type=...&branch_id=...&op=...&dtm=...`, and
    /// `phase2_url` for an XA action).
    pub fn from_query(query: &str) -> Result<BranchInfo, Error> {
        let (mut gid, mut tt, mut bid, mut op, mut dtm, mut phase2) =
            (String::new(), String::new(), String::new(), String::new(), String::new(), String::new());
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            match &*k {
                "gid" => gid = v.into_owned(),
                "trans_type" => tt = v.into_owned(),
                "branch_id" => bid = v.into_owned(),
                "op" => op = v.into_owned(),
                "dtm" => dtm = v.into_owned(),
                "phase2_url" => phase2 = v.into_owned(),
                _ => {}
            }
        }
        let b: BranchInfo = BranchInfo::new(gid, tt, bid, op)?;
        Ok(b.with_coordinator(dtm).with_phase2_url(phase2))
    }
}

/// Branch ids of sub-branches: the parent's id plus a two-digit counter (`01`...`99`), at most
/// 20 characters before the counter (DTM's limits).
pub(crate) fn sub_branch_id(parent: &str, n: u32) -> Result<String, Error> {
    if n == 0 || n > 99 {
        return Err(Error::InvalidInput("at most 99 sub-branches per branch".into()));
    }
    if parent.len() >= 20 {
        return Err(Error::InvalidInput(format!("branch id {parent} is too long to nest another level")));
    }
    Ok(format!("{parent}{n:02}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_branch_ids_nest_with_two_digits() {
        assert_eq!(sub_branch_id("", 1).unwrap(), "01");
        assert_eq!(sub_branch_id("02", 1).unwrap(), "0201");
        assert!(sub_branch_id("", 100).is_err());
        assert!(sub_branch_id(&"0".repeat(20), 1).is_err());
    }

    #[test]
    fn values_are_cleaned_like_dtm() {
        let b = BranchInfo::from_query("gid=a%3Bb%0A&trans_type=tcc&branch_id=01&op=try&dtm=x").unwrap();
        assert_eq!(b.gid, "ab");
        assert_eq!(b.coordinator, "x");
    }
}
