//! Golden files: a test's output compared with a file checked in beside the test, rewritten
//! instead when the `UPDATE_GOLDEN` environment variable is set.

use std::path::Path;

/// Compares `actual` with the file at `path`, or writes `actual` there when `UPDATE_GOLDEN`
/// is set. `what` names the output in the failure message (`ruleset`, `restore input`, ...)
/// and `hint` is added to it (what else to check when the change is intended).
///
/// # Panics
///
/// When the file is missing or differs (as a test assertion), or cannot be written.
pub fn assert_golden(path: &Path, actual: &str, what: &str, hint: &str) {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(path, actual)
            .unwrap_or_else(|error| panic!("writing {}: {error}", path.display()));
        return;
    }
    let expected = std::fs::read_to_string(path)
        .unwrap_or_else(|_| panic!("{} missing; run with UPDATE_GOLDEN=1", path.display()));
    assert_eq!(
        actual,
        expected,
        "{what} differs from {}; run with UPDATE_GOLDEN=1 if intended{hint}",
        path.display()
    );
}
