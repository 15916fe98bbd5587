//! Role names on the command line: `ic`, `ops`, `comms`, `planning`, or
//! the long names (`incident_commander`, `operations-lead`, `commander`, ...).

use commandpost_shared::incident::Role;

/// The short name to type for `role`.
pub fn short_name(role: Role) -> &'static str {
    match role {
        Role::IncidentCommander => "ic",
        Role::OperationsLead => "ops",
        Role::CommunicationsLead => "comms",
        Role::PlanningLead => "planning",
    }
}

/// Reads a role: the short names, or the long ones with `_`, `-` or spaces,
/// in any case.
pub fn parse_role(text: &str) -> Result<Role, String> {
    let normal = text.trim().to_lowercase().replace(['-', ' '], "_");
    let role = match normal.as_str() {
        "ic" | "commander" | "incident_commander" | "command" => Role::IncidentCommander,
        "ops" | "operations" | "operations_lead" | "ol" => Role::OperationsLead,
        "comms" | "communications" | "communications_lead" | "cl" => Role::CommunicationsLead,
        "planning" | "planning_lead" | "pl" => Role::PlanningLead,
        _ => {
            return Err(format!(
                "no role `{text}`: use ic (incident commander), ops (operations lead), comms (communications lead) or planning (planning lead)"
            ));
        }
    };
    Ok(role)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_role_names_are_read() {
        for role in Role::ALL {
            assert_eq!(parse_role(short_name(role)), Ok(role));
            assert_eq!(parse_role(role.as_str()), Ok(role), "{role}");
            let snake = serde_json::to_value(role).expect("role serialises");
            assert_eq!(parse_role(snake.as_str().expect("a string")), Ok(role));
        }
        assert_eq!(parse_role("Operations-Lead"), Ok(Role::OperationsLead));
        assert_eq!(parse_role(" IC "), Ok(Role::IncidentCommander));
        let error = parse_role("boss").expect_err("not a role");
        assert!(
            error.contains("no role `boss`") && error.contains("ops (operations lead)"),
            "{error}"
        );
    }
}
