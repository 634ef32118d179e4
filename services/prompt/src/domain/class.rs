//! How long a function's answers are.

use sea_orm::{DeriveActiveEnum, EnumIter, sea_query::StringLen};

/// A function's class: short answers come inline or streamed, long ones are queued as tasks
/// by default. Stored as its name in `prompt_functions.class` (migration m0003 turned the
/// protobuf numbers stored before into names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(32))")]
pub enum FunctionClass {
    #[sea_orm(string_value = "short")]
    Short,
    #[sea_orm(string_value = "long")]
    Long,
}
