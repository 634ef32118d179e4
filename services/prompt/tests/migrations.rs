//! The starter catalog, seeded with the classes as numbers by m0002, reads as names after
//! m0003, on PostgreSQL and on SQLite.

use sea_orm::EntityTrait;
use sea_orm_migration::MigratorTrait;
use skillup_prompt::{
    domain::class::FunctionClass,
    store::{entities::function, migration::Migrator},
};
use skillup_testkit::Kind;

skillup_testkit::both_adapters!(seeded_classes_become_names);

async fn seeded_classes_become_names(kind: Kind) {
    let t = kind.infra().await;
    let db = &t.infra.db;
    Migrator::up(db, None).await.unwrap();
    let class = |id: &'static str| async move {
        function::Entity::find_by_id(id).one(db).await.unwrap().expect("seeded").class
    };
    assert_eq!(class("article").await, FunctionClass::Long);
    assert_eq!(class("lesson_plan").await, FunctionClass::Long);
    assert_eq!(class("quiz").await, FunctionClass::Short);
    assert_eq!(class("summary").await, FunctionClass::Short);
}
