//! Password policy and bcrypt, always off the async threads.

use secrecy::{ExposeSecret, SecretString};

/// bcrypt only reads 72 bytes; longer passwords are refused, not silently truncated.
pub const MAX_BYTES: usize = 72;

/// Checks the policy; the message is safe to show.
pub fn check_policy(password: &str, min_chars: usize) -> Result<(), String> {
    let chars = password.chars().count();
    if chars < min_chars {
        return Err(format!("password must be at least {min_chars} characters"));
    }
    if password.len() > MAX_BYTES {
        return Err(format!(
            "password must be at most {MAX_BYTES} bytes (bcrypt reads no further)"
        ));
    }
    if password.trim().is_empty() {
        return Err("password cannot be only spaces".into());
    }
    if password.chars().any(|c| c.is_control()) {
        return Err("password cannot contain control characters".into());
    }
    Ok(())
}

/// Hashes with bcrypt at `cost`, on the blocking pool.
pub async fn hash(password: SecretString, cost: u32) -> Result<String, String> {
    tokio::task::spawn_blocking(move || {
        bcrypt::hash(password.expose_secret(), cost).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Verifies against a bcrypt hash, on the blocking pool. A malformed hash never matches.
pub async fn verify(password: SecretString, hash: String) -> bool {
    if password.expose_secret().len() > MAX_BYTES {
        // Could never have been set; still spend the time so timing says nothing.
        let _ = tokio::task::spawn_blocking(move || bcrypt::verify("x", &hash)).await;
        return false;
    }
    tokio::task::spawn_blocking(move || {
        bcrypt::verify(password.expose_secret(), &hash).unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy() {
        assert!(check_policy("short", 8).is_err());
        assert!(check_policy("long enough", 8).is_ok());
        assert!(check_policy(&"é".repeat(36), 8).is_ok(), "72 bytes is the limit");
        assert!(check_policy(&"é".repeat(37), 8).is_err(), "74 bytes refused, not truncated");
        assert!(check_policy("        ", 8).is_err());
        assert!(check_policy("abc\u{0}defgh", 8).is_err());
    }

    #[tokio::test]
    async fn hash_and_verify() {
        let h = hash(SecretString::from("correct horse"), 4).await.unwrap();
        assert!(verify(SecretString::from("correct horse"), h.clone()).await);
        assert!(!verify(SecretString::from("wrong horse"), h.clone()).await);
        assert!(!verify(SecretString::from("correct horse"), "not a hash".into()).await);
    }
}
