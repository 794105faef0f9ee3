//! SNMP errors as an operator reads them; never carrying a community or password.

/// Why an SNMP request failed. Every message is safe to show and log: it
/// names users and addresses but never communities or passwords.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnmpError {
    /// No answer at all. For v1/v2c this is also what a wrong community
    /// looks like: agents drop such requests silently.
    #[error("no response after {tries} tries (timeout {timeout_ms} ms)")]
    Timeout { tries: u32, timeout_ms: u64 },

    /// SNMPv3 USM refused us or we could not verify the agent's answer.
    #[error("authentication failed: {detail}")]
    AuthFailure { detail: String },

    /// The agent answered with a non-zero error-status.
    #[error("agent returned error {status} at varbind {index}")]
    Agent { status: String, index: u32 },

    /// The agent's answer could not be decoded or did not fit the request.
    #[error("malformed response: {detail}")]
    Malformed { detail: String },

    /// A walk returned more varbinds than we accept from one subtree.
    #[error("walk of {root} stopped: more than {limit} varbinds")]
    WalkTooLarge { root: String, limit: usize },

    /// Socket-level failure (unreachable network, refused, bind error).
    #[error("network error: {detail}")]
    Io { detail: String },

    /// The node's shared SNMP socket was shut down.
    #[error("SNMP transport closed")]
    Closed,

    /// Unusable settings, e.g. a v3 password shorter than 8 characters.
    #[error("invalid SNMP settings: {detail}")]
    Config { detail: String },

    /// The poll ran out of the time its claim allows (slow agent, or this
    /// node was paused): it stops so it cannot overlap another node's poll.
    #[error(
        "poll stopped at its time budget of {budget_ms} ms (half the interval): agent too slow"
    )]
    BudgetExhausted { budget_ms: u64 },

    /// The poll's claim was answered, or a poll permit freed, too late for
    /// its first request to start within the claim's start window: nothing
    /// was sent, and the device is claimed again.
    #[error("poll not started within {window_ms} ms of its claim; claimed again")]
    StartWindowPassed { window_ms: u64 },

    /// Anything else async-snmp reports.
    #[error("SNMP error: {detail}")]
    Other { detail: String },
}

impl SnmpError {
    /// True when the device as a whole cannot be polled (no answer, refused
    /// credentials, broken settings), as opposed to one table being odd.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            SnmpError::Timeout { .. }
                | SnmpError::AuthFailure { .. }
                | SnmpError::Io { .. }
                | SnmpError::Closed
                | SnmpError::Config { .. }
                | SnmpError::BudgetExhausted { .. }
                | SnmpError::StartWindowPassed { .. }
        )
    }
}
