//! The gRPC adapters of the ports: [`PaymentBilling`] is [`Billing`] through the payment service.

use std::time::Duration;

use skillup_proto::common::v1::Money;
use uuid::Uuid;

use crate::{
    billing::Billing,
    error::{Result, SubscribeError},
};

/// Billing through `skillup.payment.v1.PaymentService/Charge`.
pub struct PaymentBilling {
    channel: skillup_kit::grpc::ServiceChannel,
}

impl PaymentBilling {
    pub fn new(channel: impl Into<skillup_kit::grpc::ServiceChannel>) -> Self {
        Self { channel: channel.into() }
    }
}

#[async_trait::async_trait]
impl Billing for PaymentBilling {
    async fn charge(
        &self,
        user: Uuid,
        amount: i64,
        currency: &str,
        key: &str,
        description: &str,
    ) -> Result<()> {
        use skillup_proto::payment::v1::{
            ChargeRequest, payment_service_client::PaymentServiceClient,
        };
        let mut client = PaymentServiceClient::new(self.channel.clone());
        let mut req = tonic::Request::new(ChargeRequest {
            user_id: user.to_string(),
            amount: Some(Money { amount_minor: amount, currency: currency.to_owned() }),
            idempotency_key: key.to_owned(),
            description: description.to_owned(),
        });
        req.set_timeout(Duration::from_secs(10));
        match client.charge(req).await {
            Ok(_) => Ok(()),
            Err(s) => match skillup_kit::error::detail_of(&s).map(|d| d.code()) {
                Some(skillup_proto::common::v1::ErrorCode::InsufficientFunds) => {
                    Err(SubscribeError::InsufficientFunds)
                }
                Some(skillup_proto::common::v1::ErrorCode::IdempotencyKeyReused) => {
                    Err(SubscribeError::KeyReused(
                        "this idempotency key was already used for another subscription request"
                            .into(),
                    ))
                }
                _ => Err(SubscribeError::Unavailable(format!(
                    "payment: {} {}",
                    s.code(),
                    s.message()
                ))),
            },
        }
    }

    async fn credit(
        &self,
        user: Uuid,
        amount: i64,
        currency: &str,
        key: &str,
        description: &str,
    ) -> Result<()> {
        use skillup_proto::payment::v1::{
            IssueCreditRequest, payment_service_client::PaymentServiceClient,
        };
        let mut client = PaymentServiceClient::new(self.channel.clone());
        let mut req = tonic::Request::new(IssueCreditRequest {
            user_id: user.to_string(),
            amount: Some(Money { amount_minor: amount, currency: currency.to_owned() }),
            idempotency_key: key.to_owned(),
            description: description.to_owned(),
        });
        req.set_timeout(Duration::from_secs(10));
        client.issue_credit(req).await.map(drop).map_err(|s| {
            SubscribeError::Unavailable(format!("payment: {} {}", s.code(), s.message()))
        })
    }
}
