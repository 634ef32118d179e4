//! Auth's domain: values that are valid by construction, tokens, and the rules around them.
//! Nothing here knows about gRPC.

pub mod api_keys;
pub mod email;
pub mod password;
pub mod profile;
pub mod secrets;
pub mod tokens;
