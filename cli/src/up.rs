//! `skillup up`: every component and the edge in one process.

use std::time::Duration;

use anyhow::Context as _;
use skillup_ai::Generator;
use skillup_auth::{AuthConfig, AuthGrpc, keys::KeyStore};
use skillup_kit::{
    Shutdown,
    component::{Component as _, Context, Deployment},
    grpc::{GrpcServer, LocalSlot},
    infra::Infra,
};
use skillup_notification::NotificationGrpc;
use skillup_payment::PaymentGrpc;
use skillup_prompt::PromptGrpc;
use skillup_subscribe::SubscribeGrpc;

use crate::{components, say, settings::Settings};

pub async fn run(mut settings: Settings) -> anyhow::Result<()> {
    let config = settings.shared.clone();
    let shutdown = Shutdown::new();
    shutdown.on_signals();
    skillup_kit::files::private_dir(&config.data_dir)
        .with_context(|| format!("creating the data directory {}", config.data_dir.display()))?;

    let infra = Infra::connect(&config).await.context("connecting the infrastructure")?;
    say(&format!("ready  database  ({})", infra.database_kind));
    skillup_kit::db::report_pool(&infra.db, infra.database_kind);
    say(&format!("ready  cache     ({})", infra.cache_kind));
    say(&format!("ready  bus       ({})", infra.bus_kind));
    let applied = components::migrate_all(&infra.db).await?;
    say(&format!("ready  migrations ({applied} components)"));

    let store = KeyStore::new(settings.keys_dir());
    let (kid, generated) = store.ensure_signing_key().await.context("preparing the signing key")?;
    say(&format!(
        "ready  keys      (RS256 4096-bit, kid {kid}{})",
        if generated { ", generated now" } else { "" }
    ));

    // The mesh: a CA and every component's certificate, made on first start. In this process
    // the components call each other in-process as themselves; the gRPC listener shows the
    // edge's certificate to callers from outside (an operator's: `skillup keys issue operator`).
    let mesh_dir = settings.keys_dir().join("mesh");
    let made = skillup_kit::mesh::issue::init(&mesh_dir, &[], false)
        .context("preparing the mesh certificates")?;
    say(&format!(
        "ready  mesh      ({}; {})",
        mesh_dir.display(),
        if made.issued.is_empty() {
            "kept".to_owned()
        } else {
            format!("{} certificates issued now", made.issued.len())
        }
    ));
    let mesh = components::mesh_tls(&settings, "edge", &shutdown)?;

    // Web Push: the VAPID key made on first start; pushes may go to a push service on this
    // machine (development).
    let vapid = settings.notification.vapid_key_path(&settings.keys_dir());
    skillup_notification::push::VapidKey::ensure(&vapid).context("preparing the VAPID key")?;
    settings.notification.push_allow_loopback = true;

    // The gRPC listener first: services that call each other (subscribe → payment) and the
    // edge need its address, and `--grpc-addr 127.0.0.1:0` picks one only when bound.
    let listener = tokio::net::TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("binding gRPC on {}", config.grpc_addr))?;
    let grpc_addr = listener.local_addr()?;
    settings.edge.upstream_default.get_or_insert_with(|| format!("http://{grpc_addr}"));
    // The HTTP listener too, before auth: the links auth mails point at it unless
    // `auth.public_url` says otherwise (`--http-addr 127.0.0.1:9000` mails :9000 links).
    let http = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding HTTP on {}", config.http_addr))?;
    let http_addr = http.local_addr()?;
    let scheme = if settings.edge.tls_cert_file.is_some() { "https" } else { "http" };
    let public = if http_addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", http_addr.port())
    } else {
        http_addr.to_string()
    };
    if settings.auth.public_url == AuthConfig::default().public_url {
        settings.auth.public_url = format!("{scheme}://{public}");
    }

    // Services that call each other (ai → subscribe, prompt; subscribe → payment) do it
    // in-process, through the server built below, as the edge does (`edge.in_process`).
    let slot = LocalSlot::new();
    let local_slot = settings.edge.in_process.then_some(&slot);
    let identity_key = components::identity_key(&settings)?;
    let deployment = Deployment { mesh: Some(mesh.clone()), ..settings.deployment() };
    let ctx = Context::new(&config, &deployment, &infra, &shutdown).with_local(local_slot);
    let auth = AuthGrpc::build(&ctx.as_component("auth"), &settings.auth).await?;
    say(&format!(
        "ready  auth      (skillup.auth.v1; emails go to {})",
        config.outbox_dir().display()
    ));

    let prompt = PromptGrpc::build(&ctx.as_component("prompt"), &()).await?;
    say("ready  prompt    (skillup.prompt.v1; starter catalog: 7 functions, en + ru)");
    let payment = PaymentGrpc::build(&ctx.as_component("payment"), &settings.payment).await?;
    say("ready  payment   (skillup.payment.v1; card processor: sandbox, no real money)");
    let subscribe = SubscribeGrpc::build(&ctx.as_component("subscribe"), &()).await?;
    say("ready  subscribe (skillup.subscribe.v1; plans: free, basic, premium)");

    let generator = Generator::build(&ctx.as_component("ai"), &settings.ai).await?;
    let ai = skillup_ai::AiGrpc::new(generator.clone());
    let ai_admin = skillup_ai::AdminGrpc::new(generator.clone());
    say(&format!("ready  ai        (skillup.ai.v1; providers: {})", providers(&generator)));

    let notification =
        NotificationGrpc::build(&ctx.as_component("notification"), &settings.notification).await?;
    say("ready  notification (skillup.notification.v1; live at /api/notifications/ws)");

    // One listener for every gRPC service (service issues add theirs here).
    let grpc = GrpcServer::builder()
        .add_local_service(auth.into_local_server())
        .add_local_service(prompt.into_local_server())
        .add_local_service(payment.into_local_server())
        .add_local_service(subscribe.into_local_server())
        .add_local_service(ai.into_local_server())
        .add_local_service(ai_admin.into_local_server())
        .add_local_service(notification.into_local_server())
        .identity_key(identity_key.clone())
        .mesh_tls(mesh.clone())
        .readiness(infra.readiness.clone(), config.readiness_interval())
        .shutdown_timings(
            Duration::from_millis(config.shutdown.drain_ms),
            Duration::from_millis(config.shutdown.grace_ms),
        )
        .limits(config.grpc.max_concurrent_rpcs, Duration::from_millis(config.grpc.rpc_timeout_ms))
        .max_connection_age(Duration::from_millis(config.grpc.max_connection_age_ms))
        .bind_to(listener)
        .await
        .context("starting gRPC")?;
    let grpc_services = grpc.services().to_vec();
    // The edge calls them in-process: same contracts and layers, no socket in between.
    let local = grpc.local_channel();
    slot.fill(local.clone());
    let grpc_task = tokio::spawn(grpc.run(shutdown.clone()));
    say(&format!(
        "ready  grpc      {grpc_addr} (auth, prompt, payment, subscribe, ai, notification, health, reflection)"
    ));

    // The worker starts once the services it calls are reachable in-process.
    let worker_task = if settings.ai.worker_concurrency > 0 {
        let worker = skillup_ai::Worker::new(generator);
        worker.report_metrics();
        let task = tokio::spawn(
            worker.run(shutdown.clone(), Duration::from_millis(config.shutdown.grace_ms)),
        );
        say(&format!(
            "ready  worker    (generate.long, {} at a time)",
            settings.ai.worker_concurrency
        ));
        Some(task)
    } else {
        say("ready  worker    (none in this process: ai.worker_concurrency = 0)");
        None
    };

    // Route exactly what this process serves.
    let served = grpc_services;
    let edge = components::edge(
        &settings,
        &infra,
        identity_key,
        Some(served),
        Some(local),
        Some(mesh),
        &shutdown,
    )?;
    let routes = edge.inner().table.routes.len();
    let console = edge.has_console();
    let http_task = tokio::spawn(edge.serve(http, shutdown.clone()));
    say(&format!("ready  edge      {http_addr} ({routes} REST routes from the contracts)"));

    say("");
    if console {
        say(&format!("SkillUp is up: open {scheme}://{public}/"));
        say(&format!("  console   {scheme}://{public}/"));
    } else {
        say("SkillUp is up (the web console is off: edge.console = false).");
    }
    say(&format!("  api       {scheme}://{public}/api/openapi.json"));
    say(&format!("  health    {scheme}://{public}/healthz"));
    say(&format!("  ready     {scheme}://{public}/readyz"));
    say(&format!("  metrics   {scheme}://{public}/metrics"));
    say(&format!("  grpc      grpcurl -plaintext {grpc_addr} list"));
    say("            calls need a mesh certificate: skillup keys issue operator --name you");
    say("Stop with Ctrl-C.");

    let (grpc_res, http_res) = tokio::join!(grpc_task, http_task);
    grpc_res.context("grpc task")??;
    http_res.context("http task")??;
    if let Some(w) = worker_task {
        w.await.context("worker task")??;
    }
    infra.db.close().await.ok();
    tracing::info!("stopped");
    Ok(())
}

/// The provider chain for the start-up line (never the keys).
fn providers(generator: &skillup_ai::Generator) -> String {
    let names = generator.chain().names();
    if names == ["offline"] {
        "offline — set OPENAI_API_KEY or ANTHROPIC_API_KEY for real text".into()
    } else {
        names.join(" → ")
    }
}
