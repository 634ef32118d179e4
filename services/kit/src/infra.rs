//! Connects a process's infrastructure from its config: the database, the cache and the bus,
//! real servers where URLs are set and embedded ones otherwise (only under `skillup up`;
//! `Config::validate` refuses embedded ones for `skillup serve`).

use std::sync::Arc;

use sea_orm::DatabaseConnection;
use secrecy::ExposeSecret;

use crate::{
    Config, Readiness, Result,
    bus::{AmqpBus, MemoryBus, SharedBus},
    cache::{MemoryCache, RedisCache, SharedCache},
    db,
};

/// The connected infrastructure, and what each part is (for the start-up lines).
#[derive(Clone)]
pub struct Infra {
    pub db: DatabaseConnection,
    pub cache: SharedCache,
    pub bus: SharedBus,
    pub readiness: Readiness,
    pub database_kind: &'static str,
    pub cache_kind: &'static str,
    pub bus_kind: &'static str,
}

impl Infra {
    /// Connects everything; the first failure names the part that failed.
    pub async fn connect(config: &Config) -> Result<Self> {
        let url = config.database_url_or_embedded();
        let database_kind = if url.starts_with("sqlite:") { "SQLite" } else { "PostgreSQL" };
        let db = db::connect(&url, config.db_max_connections).await?;
        let (cache, cache_kind): (SharedCache, _) = match &config.redis_url {
            Some(url) => (
                Arc::new(
                    RedisCache::connect(url.expose_secret(), config.cache_prefix.clone()).await?,
                ),
                "Redis",
            ),
            None => (Arc::new(MemoryCache::new()), "in-process"),
        };
        let (bus, bus_kind): (SharedBus, _) = match &config.amqp_url {
            Some(url) => (
                Arc::new(
                    AmqpBus::connect(
                        url.expose_secret(),
                        config.bus.exchange.clone(),
                        config.bus.queue_prefix.clone(),
                        std::time::Duration::from_millis(config.bus.publish_timeout_ms),
                    )
                    .await?,
                ),
                "RabbitMQ",
            ),
            None => (Arc::new(MemoryBus::new()), "in-process"),
        };
        let readiness = Readiness::new()
            .merge(&db::probe(db.clone()))
            .merge(&crate::cache::probe(cache.clone()))
            .merge(&crate::bus::probe(bus.clone()));
        Ok(Self { db, cache, bus, readiness, database_kind, cache_kind, bus_kind })
    }
}
