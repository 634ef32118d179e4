//! SkillUp's gRPC contracts: one versioned package per service, generated from `proto/` by
//! `build.rs` (protox + tonic-prost-build, no `protoc` needed).
//!
//! ```
//! use skillup_proto::auth::v1::auth_service_client::AuthServiceClient;
//! # let _ = std::any::type_name::<AuthServiceClient<tonic::transport::Channel>>();
//! ```

/// The encoded `FileDescriptorSet` of every contract (plus the well-known and `google.api`
/// files they import): for server reflection and the edge's transcoder.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/skillup_descriptor.bin"));

/// [`FILE_DESCRIPTOR_SET`] plus `skillup.testing.v1` (`proto-testing/`): a service that exists
/// only so the edge's tests can exercise every transcoding feature. Never served by `skillup`.
#[doc(hidden)]
pub const TESTING_FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/testing_descriptor.bin"));

pub mod events;

/// Who may call each RPC, from the contracts (`skillup.common.v1.callers`): see the kit's
/// `mesh` module, which checks every call against it.
pub mod callers {
    include!(concat!(env!("OUT_DIR"), "/callers.rs"));

    /// The components allowed to call the RPC at `path` (`/skillup.payment.v1.PaymentService/Charge`);
    /// `None` for a path no contract declares (health, reflection, or nothing at all).
    pub fn of(path: &str) -> Option<&'static [&'static str]> {
        CALLERS.binary_search_by(|(p, _)| (*p).cmp(path)).ok().map(|i| CALLERS[i].1)
    }
}

/// Every gRPC service name declared in `proto/`, fully qualified, for health and reflection.
pub const SERVICE_NAMES: &[&str] = &[
    "skillup.auth.v1.AuthService",
    "skillup.prompt.v1.PromptService",
    "skillup.subscribe.v1.SubscriptionService",
    "skillup.payment.v1.PaymentService",
    "skillup.ai.v1.GenerationService",
    "skillup.ai.v1.GenerationAdminService",
    "skillup.notification.v1.NotificationService",
];

/// The protobuf codec of every generated client and server: tonic-prost's, with 1 KiB starting
/// buffers instead of 8 KiB. A server stream holds its encode buffer for as long as it is open
/// (each live notification subscriber, mostly idle), and most messages here are far below
/// 1 KiB; the buffers grow for larger ones.
pub mod codec {
    use std::marker::PhantomData;

    use tonic::codec::{BufferSettings, Codec};
    use tonic_prost::{ProstDecoder, ProstEncoder};

    /// Starting buffer 1 KiB; yield to the transport past 32 KiB (tonic's default).
    pub fn buffers() -> BufferSettings {
        BufferSettings::new(1024, 32 * 1024)
    }

    /// [`tonic_prost::ProstCodec`] with [`buffers`].
    #[derive(Debug, Clone, Copy)]
    pub struct SmallCodec<T, U>(PhantomData<(T, U)>);

    impl<T, U> Default for SmallCodec<T, U> {
        fn default() -> Self {
            Self(PhantomData)
        }
    }

    impl<T, U> Codec for SmallCodec<T, U>
    where
        T: prost::Message + Send + 'static,
        U: prost::Message + Default + Send + 'static,
    {
        type Encode = T;
        type Decode = U;
        type Encoder = ProstEncoder<T>;
        type Decoder = ProstDecoder<U>;

        fn encoder(&mut self) -> Self::Encoder {
            ProstEncoder::new(buffers())
        }

        fn decoder(&mut self) -> Self::Decoder {
            ProstDecoder::new(buffers())
        }
    }
}

/// Unary methods called by code in the same process without gRPC framing: what grpc-java's
/// in-process transport does. `build.rs` generates `<service>_local::handlers(Arc<impl
/// Service>)` next to every tonic server: each unary method as an async function of the
/// encoded request (and its metadata and extensions) to the encoded response, calling the
/// same trait method the tonic server calls. The message is still protobuf; only the HTTP/2
/// framing, the body streams and the header conversions are skipped. The layers a server puts
/// around its services are the caller's to apply (`skillup_kit::grpc::LocalChannel` does).
pub mod local {
    use std::{pin::Pin, sync::Arc};

    use prost::bytes::Bytes;
    use tonic::{Request, Response, Status};

    /// The answer of one call.
    pub type UnaryFuture =
        Pin<Box<dyn std::future::Future<Output = Result<Response<Bytes>, Status>> + Send>>;
    /// One unary method.
    pub type Handler = Arc<dyn Fn(Request<Bytes>) -> UnaryFuture + Send + Sync>;
    /// A service's unary methods by gRPC path (`/skillup.auth.v1.AuthService/GetMe`).
    pub type Handlers = Vec<(&'static str, Handler)>;

    /// The request message, as the tonic server decodes it (an undecodable one is INTERNAL,
    /// as tonic-prost says).
    pub fn decode<M: prost::Message + Default>(req: Request<Bytes>) -> Result<Request<M>, Status> {
        let (metadata, extensions, bytes) = req.into_parts();
        let message = M::decode(bytes).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Request::from_parts(metadata, extensions, message))
    }

    /// The response message, encoded.
    pub fn encode<M: prost::Message>(res: Response<M>) -> Response<Bytes> {
        let (metadata, message, extensions) = res.into_parts();
        Response::from_parts(metadata, Bytes::from(message.encode_to_vec()), extensions)
    }
}

macro_rules! package {
    ($name:ident, $pkg:literal) => {
        pub mod $name {
            pub mod v1 {
                tonic::include_proto!($pkg);
            }
        }
    };
}

package!(common, "skillup.common.v1");
package!(auth, "skillup.auth.v1");
package!(prompt, "skillup.prompt.v1");
package!(subscribe, "skillup.subscribe.v1");
package!(payment, "skillup.payment.v1");
package!(ai, "skillup.ai.v1");
package!(notification, "skillup.notification.v1");
#[doc(hidden)]
package!(testing, "skillup.testing.v1");

/// The vendored `google.api` types: the annotations (`HttpRule`) the edge's transcoder reads,
/// and `HttpBody`.
pub mod google {
    pub mod api {
        tonic::include_proto!("google.api");

        /// `google.api.HttpBody` (`proto/google/api/httpbody.proto`): an answer the edge gives
        /// as raw bytes. Written out here because our packages sit at the crate's root, so the
        /// build refers to it by an absolute path, and prost-build generates no type it is
        /// given a path for.
        #[derive(Clone, PartialEq, ::prost::Message)]
        pub struct HttpBody {
            /// The HTTP Content-Type header value specifying the content type of the body.
            #[prost(string, tag = "1")]
            pub content_type: ::prost::alloc::string::String,
            /// The HTTP request/response body as raw binary.
            #[prost(bytes = "vec", tag = "2")]
            pub data: ::prost::alloc::vec::Vec<u8>,
            /// Application specific response metadata.
            #[prost(message, repeated, tag = "3")]
            pub extensions: ::prost::alloc::vec::Vec<::prost_types::Any>,
        }

        impl ::prost::Name for HttpBody {
            const NAME: &'static str = "HttpBody";
            const PACKAGE: &'static str = "google.api";
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use prost_types::FileDescriptorSet;

    use super::*;

    fn descriptors() -> FileDescriptorSet {
        FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("descriptor set decodes")
    }

    #[test]
    fn descriptor_set_holds_every_service() {
        let fds = descriptors();
        let mut found: Vec<String> = fds
            .file
            .iter()
            .flat_map(|f| {
                let pkg = f.package().to_owned();
                f.service.iter().map(move |s| format!("{pkg}.{}", s.name()))
            })
            .collect();
        found.sort();
        let mut want: Vec<String> = SERVICE_NAMES.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(found, want);
    }

    #[test]
    fn every_enum_starts_with_unspecified_zero() {
        for file in descriptors().file.iter().filter(|f| f.package().starts_with("skillup.")) {
            let enums = file
                .enum_type
                .iter()
                .chain(file.message_type.iter().flat_map(|m| m.enum_type.iter()));
            for e in enums {
                let first = &e.value[0];
                assert_eq!(first.number(), 0, "{}.{}", file.package(), e.name());
                assert!(
                    first.name().ends_with("_UNSPECIFIED"),
                    "{}.{}: first value {} is not *_UNSPECIFIED",
                    file.package(),
                    e.name(),
                    first.name()
                );
            }
        }
    }

    /// Every field of our messages says what it holds (unit and limits) in a leading comment.
    #[test]
    fn every_field_is_documented() {
        for file in descriptors().file.iter().filter(|f| f.package().starts_with("skillup.")) {
            let info = file.source_code_info.as_ref().expect("protox keeps source info");
            for (mi, msg) in file.message_type.iter().enumerate() {
                for (fi, field) in msg.field.iter().enumerate() {
                    // Path: message_type (4) → index → field (2) → index.
                    let path = [4, mi as i32, 2, fi as i32];
                    let documented = info
                        .location
                        .iter()
                        .any(|l| l.path == path && !l.leading_comments().trim().is_empty());
                    assert!(
                        documented,
                        "{}.{}.{} has no comment",
                        file.package(),
                        msg.name(),
                        field.name()
                    );
                }
            }
        }
    }
}
