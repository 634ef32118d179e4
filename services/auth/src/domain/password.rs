//! Password policy and bcrypt, always off the async threads: on a pool of its own whose
//! threads run at a lower CPU priority (nice 10). With nothing else to do they use every core,
//! so logins run at the raw bcrypt rate; under contention they yield, so a login flood does
//! not slow token validation (which the whole platform waits on).

use std::sync::{Arc, Mutex, OnceLock, mpsc};

use secrecy::{ExposeSecret, SecretString};

type Job = Box<dyn FnOnce() + Send>;

fn pool() -> &'static mpsc::Sender<Job> {
    static POOL: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        for i in 0..threads {
            let rx = rx.clone();
            let spawned =
                std::thread::Builder::new().name(format!("bcrypt-{i}")).spawn(move || {
                    if let Err(e) = rustix::process::nice(10) {
                        tracing::debug!(error = %e, "bcrypt thread keeps its priority");
                    }
                    loop {
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a bcrypt thread");
            }
        }
        tx
    })
}

/// Runs `f` on the bcrypt pool.
async fn on_pool<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    pool()
        .send(Box::new(move || {
            let _ = tx.send(f());
        }))
        .map_err(|_| "the bcrypt pool is gone".to_owned())?;
    rx.await.map_err(|_| "a bcrypt job was dropped".to_owned())
}

/// bcrypt only reads 72 bytes; longer passwords are refused, not silently truncated.
pub const MAX_BYTES: usize = 72;

/// Checks the policy; a refusal is the message (of `locales/*.ftl`) saying why, with the
/// number it names (`$n`).
pub fn check_policy(password: &str, min_chars: usize) -> Result<(), (&'static str, usize)> {
    let chars = password.chars().count();
    if chars < min_chars {
        return Err(("password-too-short", min_chars));
    }
    if password.len() > MAX_BYTES {
        return Err(("password-too-long", MAX_BYTES));
    }
    if password.trim().is_empty() {
        return Err(("password-spaces", 0));
    }
    if password.chars().any(|c| c.is_control()) {
        return Err(("password-control", 0));
    }
    Ok(())
}

/// Hashes with bcrypt at `cost`, on the bcrypt pool.
pub async fn hash(password: SecretString, cost: u32) -> Result<String, String> {
    on_pool(move || bcrypt::hash(password.expose_secret(), cost).map_err(|e| e.to_string())).await?
}

/// Verifies against a bcrypt hash, on the bcrypt pool. A malformed hash never matches.
pub async fn verify(password: SecretString, hash: String) -> bool {
    if password.expose_secret().len() > MAX_BYTES {
        // Could never have been set; still spend the time so timing says nothing.
        let _ = on_pool(move || bcrypt::verify("x", &hash)).await;
        return false;
    }
    on_pool(move || bcrypt::verify(password.expose_secret(), &hash).unwrap_or(false))
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
    async fn the_pool_runs_at_a_lower_priority() {
        let nice =
            on_pool(|| rustix::process::getpriority_process(None).unwrap_or(0)).await.unwrap();
        assert!(nice >= 10, "bcrypt threads are niced: {nice}");
        let mine = rustix::process::getpriority_process(None).unwrap_or(0);
        assert!(mine < nice, "the async threads keep theirs");
    }

    #[tokio::test]
    async fn hash_and_verify() {
        let h = hash(SecretString::from("correct horse"), 4).await.unwrap();
        assert!(verify(SecretString::from("correct horse"), h.clone()).await);
        assert!(!verify(SecretString::from("wrong horse"), h.clone()).await);
        assert!(!verify(SecretString::from("correct horse"), "not a hash".into()).await);
    }
}
