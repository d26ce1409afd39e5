//! The typed states the store owns: where a run is, what kind a message is,
//! where an approval request is and how it was answered.
//!
//! They live here, not in the agent loop, because the store is what checks
//! and writes them: the store must not depend on the layers above it. Each
//! type maps to exactly the text stored in SQLite (the on-disk values are
//! unchanged, so no migration), converted at the store boundary through
//! `ToSql`/`FromSql`; a stored value the type does not know is a read error
//! naming the value, never a silent default. Code above the store matches on
//! the enums, never on strings. Comparing with a `&str` is kept for tests and
//! front ends that print or filter by the stored name.

use std::fmt;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

/// Defines the stored-name mapping and the traits every state type shares.
macro_rules! stored_names {
    ($ty:ident, $what:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// Every value, in declaration order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The name stored in SQLite and shown to users.
            pub fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name,)+
                }
            }

            /// The stored name (the same as `name`, for code that treated
            /// the value as text).
            pub fn as_str(&self) -> &'static str {
                self.name()
            }

            /// The value with exactly this stored name, if any.
            pub fn from_name(s: &str) -> Option<Self> {
                match s {
                    $($name => Some($ty::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.name())
            }
        }

        impl PartialEq<str> for $ty {
            fn eq(&self, other: &str) -> bool {
                self.name() == other
            }
        }

        impl PartialEq<&str> for $ty {
            fn eq(&self, other: &&str) -> bool {
                self.name() == *other
            }
        }

        impl ToSql for $ty {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.name()))
            }
        }

        impl FromSql for $ty {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                let text = value.as_str()?;
                $ty::from_name(text).ok_or_else(|| {
                    FromSqlError::Other(
                        format!(
                            concat!("unknown ", $what, " `{}` in the database (written by a newer keel?)"),
                            text
                        )
                        .into(),
                    )
                })
            }
        }
    };
}

/// Where a run is. Runs move `queued → running → (waiting_permission ⇄
/// running) → done | failed | cancelled`; the last three are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunState {
    Queued,
    Running,
    WaitingPermission,
    Done,
    Failed,
    Cancelled,
}

stored_names!(RunState, "run state", {
    Queued => "queued",
    Running => "running",
    WaitingPermission => "waiting_permission",
    Done => "done",
    Failed => "failed",
    Cancelled => "cancelled",
});

impl RunState {
    /// The unfinished states as an SQL list, for `state IN (…)` (checked
    /// against [`RunState::is_final`] by a test).
    pub const UNFINISHED_SQL: &'static str = "'queued', 'running', 'waiting_permission'";

    /// The state with this stored name, if any.
    pub fn parse(s: &str) -> Option<Self> {
        Self::from_name(s)
    }

    /// Done, failed and cancelled runs never change again.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Done | Self::Failed | Self::Cancelled)
    }

    /// Whether a run may move from `self` to `to`.
    pub fn can_move_to(self, to: RunState) -> bool {
        use RunState::*;
        match (self, to) {
            (Queued, Running) => true,
            (Running, WaitingPermission) | (WaitingPermission, Running) => true,
            (Running, Done) => true,
            // Failing or cancelling is possible from any unfinished state
            // (a crash can interrupt a queued run too).
            (from, Failed | Cancelled) => !from.is_final(),
            _ => false,
        }
    }
}

/// What a transcript row is. (`Default` only so a `NewMessage` can use
/// struct-update syntax; every writer names its kind.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MessageKind {
    /// What the person sent.
    #[default]
    User,
    /// The model's text and tool calls.
    Assistant,
    /// A tool call's result.
    Tool,
    /// A compaction summary standing for earlier rows (`covers_to`).
    Summary,
}

stored_names!(MessageKind, "message kind", {
    User => "user",
    Assistant => "assistant",
    Tool => "tool",
    Summary => "summary",
});

/// Where an approval request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApprovalState {
    /// Waiting for a person.
    Pending,
    Approved,
    Denied,
    /// Nobody answered in time (counts as no), or the run ended first.
    Expired,
}

stored_names!(ApprovalState, "approval state", {
    Pending => "pending",
    Approved => "approved",
    Denied => "denied",
    Expired => "expired",
});

/// A person's answer to an approval request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApprovalAnswer {
    Yes,
    No,
    /// Yes, and grant the rule for good.
    Always,
}

stored_names!(ApprovalAnswer, "approval answer", {
    Yes => "yes",
    No => "no",
    Always => "always",
});

impl ApprovalAnswer {
    /// What a person typed: `y`/`yes`, `n`/`no`, `a`/`always` (any case).
    /// (The stored names are exactly `yes`, `no`, `always`; see
    /// [`ApprovalAnswer::from_name`].)
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "y" | "yes" => Some(Self::Yes),
            "n" | "no" => Some(Self::No),
            "a" | "always" => Some(Self::Always),
            _ => None,
        }
    }

    pub fn approves(self) -> bool {
        !matches!(self, Self::No)
    }

    /// The state a request moves to on this answer.
    pub fn state(self) -> ApprovalState {
        if self.approves() {
            ApprovalState::Approved
        } else {
            ApprovalState::Denied
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lifecycle_is_the_documented_one() {
        use RunState::*;
        let legal = [
            (Queued, Running),
            (Running, WaitingPermission),
            (WaitingPermission, Running),
            (Running, Done),
            (Queued, Failed),
            (Queued, Cancelled),
            (Running, Failed),
            (Running, Cancelled),
            (WaitingPermission, Failed),
            (WaitingPermission, Cancelled),
        ];
        for &from in RunState::ALL {
            for &to in RunState::ALL {
                assert_eq!(
                    from.can_move_to(to),
                    legal.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
            assert_eq!(RunState::parse(from.name()), Some(from));
        }
        assert_eq!(RunState::parse("finished"), None);
        let unfinished: Vec<String> = RunState::ALL
            .iter()
            .filter(|s| !s.is_final())
            .map(|s| format!("'{s}'"))
            .collect();
        assert_eq!(RunState::UNFINISHED_SQL, unfinished.join(", "));
    }

    /// The stored text is the on-disk format: these exact strings are in
    /// every existing keel.db, so they must never change.
    #[test]
    fn stored_names_are_the_on_disk_values() {
        let names = |v: Vec<&'static str>| v.join(",");
        assert_eq!(
            names(RunState::ALL.iter().map(|s| s.name()).collect()),
            "queued,running,waiting_permission,done,failed,cancelled"
        );
        assert_eq!(
            names(MessageKind::ALL.iter().map(|s| s.name()).collect()),
            "user,assistant,tool,summary"
        );
        assert_eq!(
            names(ApprovalState::ALL.iter().map(|s| s.name()).collect()),
            "pending,approved,denied,expired"
        );
        assert_eq!(
            names(ApprovalAnswer::ALL.iter().map(|s| s.name()).collect()),
            "yes,no,always"
        );
    }

    /// Round trip through real SQLite, and an unknown stored value is an
    /// error naming it, not a default.
    #[test]
    fn sql_round_trip_and_unknown_values_are_errors() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        for &k in MessageKind::ALL {
            let back: MessageKind = c.query_row("SELECT ?1", [k], |r| r.get(0)).unwrap();
            assert_eq!(back, k);
        }
        let bad = c.query_row("SELECT 'systm'", [], |r| r.get::<_, MessageKind>(0));
        let err = bad.unwrap_err().to_string();
        assert!(err.contains("unknown message kind `systm`"), "{err}");
        let bad = c.query_row("SELECT 3", [], |r| r.get::<_, RunState>(0));
        assert!(bad.is_err());
    }

    #[test]
    fn typed_answers_parse_leniently_but_store_exactly() {
        assert_eq!(ApprovalAnswer::parse(" A "), Some(ApprovalAnswer::Always));
        assert_eq!(ApprovalAnswer::from_name("a"), None);
        assert_eq!(ApprovalAnswer::Always.state(), ApprovalState::Approved);
        assert_eq!(ApprovalAnswer::No.state(), ApprovalState::Denied);
    }
}
