//! Call signalling state: which calls are ringing or running, between whom, answered where.
//!
//! Signalling only: SDP offers/answers and ICE candidates are relayed between the two users'
//! sessions; media never touches the node. Every session of the callee rings; the first
//! `call.answer` wins and the callee's other sessions get `call.end` with reason
//! `answered_elsewhere`. When a call ends, a call-log message is stored in the pair's direct
//! conversation.
//!
//! Bounds: at most `MAX_CALLS_PER_USER` calls a user has placed at once (more get `conflict`),
//! and a call that is never answered nor ended is forgotten after `RING_TIMEOUT`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// Calls one user may have placed at once.
pub const MAX_CALLS_PER_USER: usize = 8;
/// An unanswered call is forgotten after this long.
pub const RING_TIMEOUT: Duration = Duration::from_secs(120);
/// An answered call nobody ended is forgotten after this long.
pub const MAX_CALL: Duration = Duration::from_secs(12 * 3600);

/// One call.
#[derive(Debug, Clone)]
pub struct Call {
    pub caller: Arc<str>,
    pub callee: Arc<str>,
    pub offered_at: Instant,
    /// The callee's session that answered, and when.
    pub answered: Option<(Arc<str>, Instant)>,
}

/// Why a signalling step was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("a call with this call_id exists already")]
    Exists,
    #[error("too many calls placed at once")]
    TooMany,
    #[error("no such call")]
    Unknown,
    #[error("the call was answered already")]
    AlreadyAnswered,
}

/// Calls in progress on this node.
#[derive(Default)]
pub struct Calls {
    map: DashMap<String, Call>,
}

impl Calls {
    /// Registers a new ringing call.
    pub fn offer(&self, call_id: &str, caller: &Arc<str>, callee: &Arc<str>, now: Instant) -> Result<(), CallError> {
        // Forget calls nobody answered within the ring timeout, and answered calls nobody ended
        // within `MAX_CALL` (a client that crashed mid-call never sends `call.end`).
        self.map.retain(|_, c| match c.answered {
            None => now.saturating_duration_since(c.offered_at) < RING_TIMEOUT,
            Some((_, at)) => now.saturating_duration_since(at) < MAX_CALL,
        });
        if self.map.iter().filter(|c| c.caller == *caller).count() >= MAX_CALLS_PER_USER {
            return Err(CallError::TooMany);
        }
        match self.map.entry(call_id.to_string()) {
            dashmap::Entry::Occupied(_) => Err(CallError::Exists),
            dashmap::Entry::Vacant(v) => {
                v.insert(Call { caller: caller.clone(), callee: callee.clone(), offered_at: now, answered: None });
                Ok(())
            }
        }
    }

    /// The callee's session `session` answers the call `caller` placed; the first answer wins.
    pub fn answer(
        &self,
        call_id: &str,
        caller: &str,
        callee: &str,
        session: &Arc<str>,
        now: Instant,
    ) -> Result<Call, CallError> {
        let mut call = self.map.get_mut(call_id).ok_or(CallError::Unknown)?;
        if *call.callee != *callee || *call.caller != *caller {
            return Err(CallError::Unknown);
        }
        if call.answered.is_some() {
            return Err(CallError::AlreadyAnswered);
        }
        call.answered = Some((session.clone(), now));
        Ok(call.clone())
    }

    /// The call, if `user` is one of its parties.
    pub fn party(&self, call_id: &str, user: &str) -> Option<Call> {
        self.map.get(call_id).filter(|c| *c.caller == *user || *c.callee == *user).map(|c| c.clone())
    }

    /// Ends the call (either party); returns it.
    pub fn end(&self, call_id: &str, user: &str) -> Option<Call> {
        self.map.remove_if(call_id, |_, c| *c.caller == *user || *c.callee == *user).map(|(_, c)| c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_answer_wins_and_only_parties_end() {
        let calls = Calls::default();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let t = Instant::now();
        calls.offer("c1", &a, &b, t).unwrap();
        assert_eq!(calls.offer("c1", &a, &b, t), Err(CallError::Exists));
        assert_eq!(
            calls.answer("c1", "b", "a", &"s".into(), t).unwrap_err(),
            CallError::Unknown,
            "only the callee answers"
        );
        assert_eq!(calls.answer("c1", "x", "b", &"s".into(), t).unwrap_err(), CallError::Unknown, "to the caller");
        calls.answer("c1", "a", "b", &"s1".into(), t).unwrap();
        assert_eq!(calls.answer("c1", "a", "b", &"s2".into(), t).unwrap_err(), CallError::AlreadyAnswered);

        assert!(calls.end("c1", "mallory").is_none());
        assert!(calls.end("c1", "b").is_some());
        assert!(calls.party("c1", "a").is_none());
        for i in 0..MAX_CALLS_PER_USER {
            calls.offer(&format!("x{i}"), &a, &b, t).unwrap();
        }
        assert_eq!(calls.offer("one-more", &a, &b, t), Err(CallError::TooMany));
        // Unanswered calls are forgotten after the ring timeout.
        calls.offer("late", &b, &a, t + RING_TIMEOUT).unwrap();
        assert!(calls.party("x0", "a").is_none());
    }
}
