//! The console in headless Chromium (Debian's, driven by playwright-core): the script in
//! `tests/browser/console.mjs` signs in, watches the counter move while this test sends, bans a
//! user from the page (whose socket this test sees closed with 4003), deletes another (closed
//! with 4001, token refused after), and checks that user content is rendered as text. `scripts/test.sh` installs Chromium and playwright-core.

use std::process::Stdio;
use std::time::Duration;

use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_in_a_real_browser() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "Debian's chromium is needed for the browser tests: run scripts/test.sh (it installs it)"
    );
    assert!(
        root.join("tests/browser/node_modules/playwright-core").exists(),
        "playwright-core is needed for the browser tests: run scripts/test.sh (it installs it)"
    );
    let n = TestNode::start().await;
    let (a, b) = (n.signup("alice").await, n.signup("bob").await);
    let (s, _) = n
        .post(
            "/api/auth/signup",
            None,
            json!({"username":"hostile","password":"password123","display_name":"<img src=x onerror=alert(1)>"}),
        )
        .await;
    assert_eq!(s, 201);
    let doomed = n.signup("dora").await;
    let id = n.group(&a, &[&b]).await;
    let mut victim = n.ws(&b).await;
    let mut doomed_ws = n.ws(&doomed).await;
    // Live traffic for the counter.
    let mut sender = n.ws(&a).await;
    let conv = id.clone();
    let traffic = tokio::spawn(async move {
        for i in 0.. {
            sender.send(json!({"op":"send","conv":conv,"client_id":format!("t{i}"),"body":"tick"})).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            if i > 600 {
                break;
            }
        }
    });
    let shot = root.join("target/console-overview.png");
    let out = tokio::process::Command::new("node")
        .arg(root.join("tests/browser/console.mjs"))
        .args([&n.admin_base, "test-admin-token-0123456789", "bob", shot.to_str().unwrap(), "dora"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), out).await.expect("browser test timed out").unwrap();
    traffic.abort();
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "browser checks failed:\n{log}");
    assert_eq!(victim.expect_close().await, 4003, "the ban from the page closed the user's socket");
    assert_eq!(doomed_ws.expect_close().await, 4001, "the deletion from the page closed the user's socket");
    assert_eq!(n.get("/api/users/me", tok(&doomed)).await.0, 401, "the deleted account's token is refused");
    assert!(shot.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_client_works_in_a_real_browser() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    assert!(std::path::Path::new("/usr/bin/chromium").exists(), "run scripts/test.sh: it installs chromium");
    assert!(
        root.join("tests/browser/node_modules/playwright-core").exists(),
        "run scripts/test.sh: it installs playwright-core"
    );
    // Short-lived access tokens: the client must refresh them (and reconnect after a 4001)
    // while the test runs.
    let n = TestNode::start_with(|c| c.access_ttl = Duration::from_secs(4)).await;
    let shots = root.join("target");
    let out = tokio::process::Command::new("node")
        .arg(root.join("tests/browser/client.mjs"))
        .args([&n.base, shots.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), out).await.expect("browser test timed out").unwrap();
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "web client checks failed:\n{log}");
    assert!(shots.join("client-desktop.png").exists() && shots.join("client-phone.png").exists());
}
