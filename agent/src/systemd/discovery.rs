//! Which database units run on this machine, and which quiescer would handle each.

use super::{SystemdError, UnitState, Units};

/// The units looked for: the databases whose consistency on disk matters.
pub(crate) const DATABASE_PATTERNS: &[&str] = &[
    "postgresql*.service",
    "mariadb*.service",
    "mysql*.service",
    "redis*.service",
    "mongod*.service",
];

/// What kind of database a unit runs, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum DatabaseKind {
    Postgresql,
    Mariadb,
    Redis,
    Mongodb,
}

impl DatabaseKind {
    pub(crate) fn of_unit(unit: &str) -> Option<DatabaseKind> {
        let base = unit.strip_suffix(".service").unwrap_or(unit);
        if base.starts_with("postgresql") {
            Some(DatabaseKind::Postgresql)
        } else if base.starts_with("mariadb") || base.starts_with("mysql") {
            Some(DatabaseKind::Mariadb)
        } else if base.starts_with("redis") {
            Some(DatabaseKind::Redis)
        } else if base.starts_with("mongod") {
            Some(DatabaseKind::Mongodb)
        } else {
            None
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DatabaseKind::Postgresql => "postgresql",
            DatabaseKind::Mariadb => "mariadb",
            DatabaseKind::Redis => "redis",
            DatabaseKind::Mongodb => "mongodb",
        }
    }
}

/// An active database unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DatabaseUnit {
    pub kind: DatabaseKind,
    pub unit: UnitState,
}

/// The active database units, by name. Units without a main process (Debian's
/// `postgresql.service`, which only groups the `postgresql@VERSION-CLUSTER` units) are left out:
/// there is nothing behind them to quiesce.
pub(crate) async fn database_units(units: &dyn Units) -> Result<Vec<DatabaseUnit>, SystemdError> {
    Ok(units
        .list_active(DATABASE_PATTERNS)
        .await?
        .into_iter()
        .filter(|u| u.main_pid.is_some())
        .filter_map(|unit| DatabaseKind::of_unit(&unit.name).map(|kind| DatabaseUnit { kind, unit }))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names_map_to_kinds() {
        for (unit, kind) in [
            ("postgresql@15-main.service", Some(DatabaseKind::Postgresql)),
            ("postgresql.service", Some(DatabaseKind::Postgresql)),
            ("mariadb.service", Some(DatabaseKind::Mariadb)),
            ("mysql.service", Some(DatabaseKind::Mariadb)),
            ("redis-server.service", Some(DatabaseKind::Redis)),
            ("redis-server@cache.service", Some(DatabaseKind::Redis)),
            ("mongod.service", Some(DatabaseKind::Mongodb)),
            ("nginx.service", None),
        ] {
            assert_eq!(DatabaseKind::of_unit(unit), kind, "{unit}");
        }
    }
}
