//! The SQL functions the writer's connection adds (ADR 26): `dtx_apply(branches, updates)`
//! and `dtx_append(branches, added)` change a transaction's packed branches
//! ([`dtx_store::packed`]) inside the UPDATE that writes its global row, so a save or a
//! registration stays one statement. A refusal fails the statement before it writes anything;
//! [`refusal`] reads it back: a missing or duplicate branch is the error the row layout gave,
//! and branches that would grow beyond [`PACKED_LIMIT`] send the writer to the branch rows.
//! (The statements match only rows whose branches are packed; see `conn.rs`.)

use dtx_store::Error;
use dtx_store::packed::{self, PackedError};
use rusqlite::functions::{Context, FunctionFlags};

/// The most bytes of packed branches a transaction keeps in its row; beyond it, its branches
/// are rows. Every write of packed branches rewrites all of them: a large transaction written
/// after each call (a 100-step saga with 512-byte payloads) ran 24 times slower packed than
/// in rows (ADR 26). Half a page keeps the global row, branches included, on one page.
pub(crate) const PACKED_LIMIT: usize = 2048;

/// How a refusal's message starts, so that [`refusal`] tells it from SQLite's own errors.
const MISSING: &str = "dtx: no branch ";
const DUPLICATE: &str = "dtx: duplicate branch ";
const ROWS: &str = "dtx: branch rows";
const FULL: &str = "dtx: packed branches full";

/// What a statement calling the functions came to, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It ran; this many rows matched (none: among other reasons, the branches are rows).
    Changed(u64),
    /// The packed branches would exceed [`PACKED_LIMIT`]: nothing was written.
    Full,
}

/// Adds the functions to the writer's connection.
pub(crate) fn register(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    let flags =
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC | FunctionFlags::SQLITE_DIRECTONLY;
    conn.create_scalar_function("dtx_apply", 2, flags, |ctx| change(ctx, packed::apply))?;
    conn.create_scalar_function("dtx_append", 2, flags, |ctx| {
        change(ctx, |branches, added| packed::append(branches, added, PACKED_LIMIT))
    })
}

fn change(
    ctx: &Context<'_>,
    f: impl Fn(&[u8], &[u8]) -> Result<Vec<u8>, PackedError>,
) -> rusqlite::Result<Vec<u8>> {
    let branches = ctx.get_raw(0).as_blob_or_null()?.unwrap_or_default();
    let change = ctx.get_raw(1).as_blob()?;
    f(branches, change).map_err(|e| {
        let message = match e {
            PackedError::Missing { branch_id, op } => format!("{MISSING}{branch_id}/{op}"),
            PackedError::Duplicate { branch_id, op } => format!("{DUPLICATE}{branch_id}/{op}"),
            PackedError::Rows => ROWS.to_owned(),
            PackedError::Full(_) => FULL.to_owned(),
            corrupt @ PackedError::Corrupt(_) => format!("dtx: {corrupt}"),
        };
        rusqlite::Error::UserFunctionError(message.into())
    })
}

/// What a failure of a statement calling [`register`]'s functions stands for: the store error
/// of a refusal, worded as the row layout's (`branch 01/action of gid …`), or the outcome that
/// sends the writer to the rows; `None` for any other error.
pub(crate) fn refusal(err: &rusqlite::Error, gid: &str) -> Option<Result<Outcome, Error>> {
    let rusqlite::Error::SqliteFailure(_, Some(message)) = err else {
        return None;
    };
    if let Some(branch) = message.strip_prefix(MISSING) {
        return Some(Err(Error::NotFound(format!("branch {branch} of {gid}"))));
    }
    if let Some(branch) = message.strip_prefix(DUPLICATE) {
        return Some(Err(Error::Conflict(format!("branch {branch} of {gid} already exists"))));
    }
    // The statements never hand branch rows (an empty value) to the functions: a "rows"
    // refusal is a bug, reported as SQLite's error.
    (message == FULL).then_some(Ok(Outcome::Full))
}
