//! Single-use tokens that bind a streaming URL to the one request it was
//! issued for. A token is 256 bits from the operating system's CSPRNG, lives
//! for the configured TTL and is removed by its first use, whatever the
//! outcome, so a replayed or guessed URL finds nothing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::TryRngCore;
use rand::rngs::OsRng;

use super::{Kind, StreamError, StreamRequest};

/// At most this many URLs wait for their client; kubelet asks for one per
/// `kubectl exec`, so more means a client that asks and never comes.
pub(crate) const MAX_PENDING: usize = 1000;

const TOKEN_BYTES: usize = 32;

struct Entry {
    request: StreamRequest,
    expires: Instant,
}

pub(crate) struct TokenStore {
    ttl: Duration,
    max_pending: usize,
    entries: Mutex<HashMap<String, Entry>>,
}

impl TokenStore {
    pub(crate) fn new(ttl: Duration, max_pending: usize) -> TokenStore {
        TokenStore {
            ttl,
            max_pending,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn insert(&self, request: StreamRequest) -> Result<String, StreamError> {
        self.insert_at(request, Instant::now())
    }

    /// Consumes the token if it was issued for `kind` and has not expired.
    pub(crate) fn take(&self, kind: Kind, token: &str) -> Option<StreamRequest> {
        self.take_at(kind, token, Instant::now())
    }

    fn insert_at(&self, request: StreamRequest, now: Instant) -> Result<String, StreamError> {
        let mut bytes = [0u8; TOKEN_BYTES];
        OsRng
            .try_fill_bytes(&mut bytes)
            .map_err(|e| StreamError::Random(std::io::Error::other(e)))?;
        let token = hex::encode(bytes);
        let mut entries = self.lock();
        entries.retain(|_, e| e.expires > now);
        if entries.len() >= self.max_pending {
            return Err(StreamError::TooManyPending(self.max_pending));
        }
        entries.insert(
            token.clone(),
            Entry {
                request,
                expires: now + self.ttl,
            },
        );
        Ok(token)
    }

    fn take_at(&self, kind: Kind, token: &str, now: Instant) -> Option<StreamRequest> {
        let entry = self.lock().remove(token)?;
        (entry.expires > now && entry.request.kind() == kind).then_some(entry.request)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding this lock cannot leave the map half-updated
        // (every change is one insert or remove), so a poisoned lock is usable.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{ExecRequest, PortForwardRequest};

    fn exec() -> StreamRequest {
        StreamRequest::Exec(ExecRequest {
            container_id: "c1".into(),
            cmd: vec!["true".into()],
            tty: false,
            stdin: false,
            stdout: true,
            stderr: true,
        })
    }

    fn store() -> TokenStore {
        TokenStore::new(Duration::from_secs(60), 3)
    }

    #[test]
    fn token_is_single_use() {
        let tokens = store();
        let token = tokens.insert(exec()).expect("insert");
        assert_eq!(tokens.take(Kind::Exec, &token), Some(exec()));
        assert_eq!(tokens.take(Kind::Exec, &token), None);
    }

    #[test]
    fn tokens_are_long_random_and_distinct() {
        let tokens = store();
        let a = tokens.insert(exec()).expect("insert");
        let b = tokens.insert(exec()).expect("insert");
        assert_eq!(a.len(), 2 * TOKEN_BYTES);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn expired_token_is_refused() {
        let tokens = store();
        let start = Instant::now();
        let token = tokens.insert_at(exec(), start).expect("insert");
        let late = start + Duration::from_secs(61);
        assert_eq!(tokens.take_at(Kind::Exec, &token, late), None);
        let token = tokens.insert_at(exec(), start).expect("insert");
        let in_time = start + Duration::from_secs(59);
        assert_eq!(tokens.take_at(Kind::Exec, &token, in_time), Some(exec()));
    }

    #[test]
    fn forged_or_wrong_kind_token_is_refused() {
        let tokens = store();
        let token = tokens.insert(exec()).expect("insert");
        assert_eq!(tokens.take(Kind::Exec, &"0".repeat(64)), None);
        assert_eq!(tokens.take(Kind::Exec, ""), None);
        // Used at the wrong endpoint, the token is burnt, not kept for later.
        assert_eq!(tokens.take(Kind::Attach, &token), None);
        assert_eq!(tokens.take(Kind::Exec, &token), None);
    }

    #[test]
    fn pending_tokens_are_bounded_and_expired_ones_make_room() {
        let tokens = store();
        let start = Instant::now();
        let pf = || {
            StreamRequest::PortForward(PortForwardRequest {
                pod_id: "p".into(),
                ports: vec![],
            })
        };
        for _ in 0..3 {
            tokens.insert_at(pf(), start).expect("insert");
        }
        assert!(matches!(
            tokens.insert_at(pf(), start),
            Err(StreamError::TooManyPending(3))
        ));
        tokens
            .insert_at(pf(), start + Duration::from_secs(61))
            .expect("expired tokens are swept");
        assert_eq!(tokens.len(), 1);
    }
}
