//! How a test that needs a database server it was not given behaves: skipped with a notice
//! when run by hand, a failure under CI (`CI=true`), so CI can never lose a backend's coverage
//! by a missing variable.

/// True when the `CI` variable says this is a CI run (`true` or `1`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Reports that `test` cannot run because of `why`: prints a notice and returns (the caller
/// then skips), or panics under CI.
///
/// # Panics
/// Under `CI=true`: a suite that would skip there must fail the run instead.
pub fn skip(test: &str, why: &str) {
    if in_ci() {
        panic!(
            "{test}: {why}; under CI=true this suite must run, not skip (bash .ci/run provides its server)"
        );
    }
    eprintln!("SKIPPED {test}: {why} (bash .ci/run provides it; see the README)");
}
