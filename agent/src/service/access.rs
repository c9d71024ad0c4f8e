//! Who may call what. The D-Bus policy file limits the callers the bus lets through; the agent
//! checks again from the bus's own account of the caller (its uid and groups), so a wrong or
//! missing policy file does not open the agent up.

use freezeframe_contract::AgentError;

/// The group whose members may take snapshots, like root.
pub(crate) const GROUP: &str = "freezeframe";

/// What a method does, for the access rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Snapshot, Prune: root and the group.
    Change,
    /// Status, Plan, ListSnapshots: root and the group, or anyone with `public_read`.
    Read,
}

/// A caller as the bus describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    pub uid: u32,
    pub groups: Vec<u32>,
}

/// The caller of the method call with `header`, from the bus daemon.
pub(crate) async fn caller(
    connection: &zbus::Connection,
    header: &zbus::message::Header<'_>,
) -> Result<Caller, AgentError> {
    let sender = header
        .sender()
        .ok_or_else(|| AgentError::AccessDenied("the call has no sender".into()))?;
    let bus = zbus::fdo::DBusProxy::new(connection)
        .await
        .map_err(|e| AgentError::Failed(e.to_string()))?;
    let credentials = bus
        .get_connection_credentials(sender.clone().into())
        .await
        .map_err(|e| AgentError::AccessDenied(format!("the bus cannot say who {sender} is: {e}")))?;
    let uid = credentials
        .unix_user_id()
        .ok_or_else(|| AgentError::AccessDenied(format!("the bus does not know the uid of {sender}")))?;
    Ok(Caller {
        uid,
        groups: credentials.unix_group_ids().cloned().unwrap_or_default(),
    })
}

/// Why a caller was let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admitted {
    /// Root or a member of the group: trusted with the machine's snapshots.
    Privileged,
    /// Anyone, by `public_read`: may read, and is kept from spending the API's budget.
    Public,
}

/// Allows or refuses `caller` for `access`; `group` is the freezeframe group's id, if it exists.
pub(crate) fn check(
    caller: &Caller,
    access: Access,
    group: Option<u32>,
    public_read: bool,
) -> Result<Admitted, AgentError> {
    let member = group.is_some_and(|g| caller.groups.contains(&g));
    if caller.uid == 0 || member {
        return Ok(Admitted::Privileged);
    }
    if access == Access::Read && public_read {
        return Ok(Admitted::Public);
    }
    Err(AgentError::AccessDenied(format!(
        "uid {} may not call this: only root and members of the group `{GROUP}` may{}",
        caller.uid,
        if access == Access::Read {
            " (or everyone, with `agent.public_read = true`)"
        } else {
            ""
        }
    )))
}

/// The id of the group `freezeframe`, if this machine has it.
pub(crate) fn group_id() -> Option<u32> {
    nix::unistd::Group::from_name(GROUP)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_the_group_may_change_others_only_read_when_public() {
        let root = Caller {
            uid: 0,
            groups: vec![],
        };
        let member = Caller {
            uid: 1000,
            groups: vec![100, 990],
        };
        let other = Caller {
            uid: 1001,
            groups: vec![100],
        };
        assert!(check(&root, Access::Change, None, false).is_ok());
        assert!(check(&member, Access::Change, Some(990), false).is_ok());
        assert!(
            check(&member, Access::Change, None, false).is_err(),
            "no such group"
        );
        let refused = check(&other, Access::Change, Some(990), true).unwrap_err();
        assert!(refused.to_string().contains("uid 1001"), "{refused}");
        assert!(check(&other, Access::Read, Some(990), false).is_err());
        assert_eq!(
            check(&other, Access::Read, Some(990), true).unwrap(),
            Admitted::Public
        );
        assert_eq!(
            check(&member, Access::Read, Some(990), true).unwrap(),
            Admitted::Privileged
        );
    }
}
