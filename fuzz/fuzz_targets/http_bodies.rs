//! The HTTP API's JSON bodies: any bytes decode into the body type or fail cleanly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rookery_node::api::{auth_routes, conversations, users};

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else { return };
    // The first byte picks the route's body type.
    let _ = match which % 8 {
        0 => serde_json::from_slice::<auth_routes::SignupBody>(body).is_ok(),
        1 => serde_json::from_slice::<auth_routes::LoginBody>(body).is_ok(),
        2 => serde_json::from_slice::<auth_routes::RefreshBody>(body).is_ok(),
        3 => serde_json::from_slice::<conversations::CreateBody>(body).is_ok(),
        4 => serde_json::from_slice::<conversations::PatchBody>(body).is_ok(),
        5 => serde_json::from_slice::<conversations::AddMembersBody>(body).is_ok(),
        6 => serde_json::from_slice::<conversations::SendBody>(body).is_ok(),
        _ => serde_json::from_slice::<users::PatchMe>(body).is_ok(),
    };
});
