//! The repository's promises: the README's test command is what CI runs.

#[test]
fn ci_runs_the_readme_test_command() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let ci = std::fs::read_to_string(root.join(".ci/run")).unwrap();
    let command = readme
        .lines()
        .skip_while(|l| !l.contains("<!-- test-command -->"))
        .nth(2)
        .expect("the README marks its test command with <!-- test-command --> above a code block")
        .trim();
    assert!(ci.lines().any(|l| l.trim() == command), ".ci/run must run `{command}`");
    assert!(
        readme.contains("cargo run --release --bin rookery -- serve"),
        "the README gives the command that runs the node"
    );
}
