//! The Python client (`clients/python`, installed in the test venv with
//! `pip install ./clients/python` by `scripts/setup-test-env.sh`): its own test
//! suite, run against a live server.

use std::path::PathBuf;

#[tokio::test]
async fn the_python_client_suite_passes_against_a_live_bus() {
    let tests = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/python/tests");
    let installed = std::process::Command::new(crate::hermes::python())
        .args(["-c", "import hookbus; print(hookbus.__file__)"])
        .current_dir(&tests)
        .output()
        .unwrap();
    let installed = String::from_utf8_lossy(&installed.stdout);
    assert!(
        installed.contains("site-packages"),
        "the suite must test the installed package (pip install ./clients/python), not {installed}"
    );
    // With a store, for the KV, jobs and streams tests, and a stream `py` on
    // `py.>` (HOOKBUS_TEST_STREAM) for the streams tests.
    let state = tempfile::tempdir().unwrap();
    let streams = vec![crate::streams::stream("py", &["py.>"])];
    let bus = crate::streams::store_bus(state.path(), streams, |_| {}).await;
    // Run from the tests folder, so `import hookbus` finds the installed package,
    // not the sources beside it.
    let out = tokio::process::Command::new(crate::hermes::python())
        .args(["-m", "unittest", "discover", "-v", "-s", "."])
        .current_dir(&tests)
        .env("HOOKBUS_SOCKET", &bus.socket)
        .env("HOOKBUS_TEST_STREAM", "py")
        .output()
        .await
        .unwrap();
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{report}");
    assert!(
        !report.contains("skipped="),
        "the live tests must run: {report}"
    );
    let ran = report
        .lines()
        .find_map(|l| {
            l.strip_prefix("Ran ")?
                .split(' ')
                .next()?
                .parse::<u32>()
                .ok()
        })
        .unwrap_or(0);
    assert!(ran >= 40, "ran {ran} tests: {report}");
    bus.stop().await;
}
