//! The HTTP API's JSON bodies: any bytes decode into the body type or fail cleanly, through the
//! same parser as the API's JSON extractor (objects only).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rookery_node::api::extract::parse_object;
use rookery_node::api::{auth_routes, conversations, users};

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else { return };
    // The first byte picks the route's body type.
    let _ = match which % 8 {
        0 => parse_object::<auth_routes::SignupBody>(body).is_ok(),
        1 => parse_object::<auth_routes::LoginBody>(body).is_ok(),
        2 => parse_object::<auth_routes::RefreshBody>(body).is_ok(),
        3 => parse_object::<conversations::CreateConversation>(body).is_ok(),
        4 => parse_object::<conversations::PatchConversation>(body).is_ok(),
        5 => parse_object::<conversations::AddMembers>(body).is_ok(),
        6 => parse_object::<conversations::SendBody>(body).is_ok(),
        _ => parse_object::<users::PatchMe>(body).is_ok(),
    };
});
