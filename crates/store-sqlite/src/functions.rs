//! The SQL functions the writer's connection adds (ADR 26): `dtx_apply(branches, updates)`
//! and `dtx_append(branches, added)` change a transaction's packed branches
//! ([`dtx_store::packed`]) inside the UPDATE that writes its global row, so a save or a
//! registration stays one statement. A refusal (a missing or duplicate branch) fails the
//! statement; [`refusal`] turns its message back into the error the row layout gave.

use dtx_store::Error;
use dtx_store::packed::{self, PackedError};
use rusqlite::functions::{Context, FunctionFlags};

/// How a refusal's message starts, so that [`refusal`] tells it from SQLite's own errors.
const MISSING: &str = "dtx: no branch ";
const DUPLICATE: &str = "dtx: duplicate branch ";

/// Adds the functions to the writer's connection.
pub(crate) fn register(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    let flags =
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC | FunctionFlags::SQLITE_DIRECTONLY;
    conn.create_scalar_function("dtx_apply", 2, flags, |ctx| change(ctx, packed::apply))?;
    conn.create_scalar_function("dtx_append", 2, flags, |ctx| change(ctx, packed::append))
}

/// A change of packed branches: [`packed::apply`] or [`packed::append`].
type Change = fn(&[u8], &[u8]) -> Result<Vec<u8>, PackedError>;

fn change(ctx: &Context<'_>, f: Change) -> rusqlite::Result<Vec<u8>> {
    let branches = ctx.get_raw(0).as_blob_or_null()?.unwrap_or_default();
    let change = ctx.get_raw(1).as_blob()?;
    f(branches, change).map_err(|e| {
        let message = match e {
            PackedError::Missing { branch_id, op } => format!("{MISSING}{branch_id}/{op}"),
            PackedError::Duplicate { branch_id, op } => format!("{DUPLICATE}{branch_id}/{op}"),
            corrupt @ PackedError::Corrupt(_) => format!("dtx: {corrupt}"),
        };
        rusqlite::Error::UserFunctionError(message.into())
    })
}

/// The store error a refusal of [`register`]'s functions stands for, worded as the row
/// layout's (`branch 01/action of gid …`); `None` for any other error.
pub(crate) fn refusal(err: &rusqlite::Error, gid: &str) -> Option<Error> {
    let rusqlite::Error::SqliteFailure(_, Some(message)) = err else {
        return None;
    };
    if let Some(branch) = message.strip_prefix(MISSING) {
        return Some(Error::NotFound(format!("branch {branch} of {gid}")));
    }
    message
        .strip_prefix(DUPLICATE)
        .map(|branch| Error::Conflict(format!("branch {branch} of {gid} already exists")))
}
