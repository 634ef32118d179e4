"""gRPC's richer error model as operators' clients read it: Python's grpcio-status and grpcurl,
calling `skillup up`'s gRPC port directly (SDK_GRPC_ADDR) for each class of error a caller can
meet. Each status's `grpc-status-details-bin` must be a `google.rpc.Status` with the status's own
code and message (grpcio-status checks both), our `skillup.common.v1.ErrorDetail` packed beside
`google.rpc.ErrorInfo` (reason = the code's name), `BadRequest` naming a bad field and
`RetryInfo` when waiting helps; grpcurl must print the status's real code (it read the bare
detail's code number as the gRPC code before: UNAUTHENTICATED = 2 showed as Unknown).

Every call is made as a component of the mesh, with its certificate from the data directory's
mesh CA (mutual TLS), as the component that really makes it: the edge for the routes' RPCs,
subscribe for `Charge`, an operator (`skillup keys issue operator`) for `Refund`. The caller check
itself answers in the same rich form: UNAUTHENTICATED to a caller without a certificate,
PERMISSION_DENIED to a component the contract does not name.

The request messages come from the contracts in proto/, compiled here by grpcio-tools."""

import glob
import os
import subprocess
import sys
import uuid

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

ADDR = os.environ["SDK_GRPC_ADDR"]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="session")
def pb(tmp_path_factory):
    """The contracts' Python messages (`pb.auth`, `pb.payment`, `pb.common`)."""
    import grpc_tools
    from grpc_tools import protoc

    out = tmp_path_factory.mktemp("contracts")
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    files = sorted(glob.glob(os.path.join(ROOT, "proto/skillup/**/*.proto"), recursive=True))
    rc = protoc.main(["protoc", f"-I{ROOT}/proto", f"-I{well_known}", f"--python_out={out}", *files])
    assert rc == 0, "the contracts compile"
    sys.path.insert(0, str(out))
    from skillup.auth.v1 import auth_pb2
    from skillup.common.v1 import common_pb2
    from skillup.payment.v1 import payment_pb2

    class Contracts:
        auth, common, payment = auth_pb2, common_pb2, payment_pb2

    return Contracts


MESH = os.path.join(os.environ["SDK_DATA_DIR"], "keys", "mesh")
OPERATOR = "sdk-tests"


def files(who):
    """The CA, certificate and key files a caller presents (`operator`: the test operator's)."""
    name = OPERATOR if who == "operator" else who
    return os.path.join(MESH, "ca.pem"), os.path.join(MESH, f"{name}.pem"), os.path.join(MESH, f"{name}.key")


@pytest.fixture(scope="session")
def mesh():
    """A channel per caller, made on first use; `None` is a caller without a certificate."""
    subprocess.run(
        [os.environ["SDK_BINARY"], "keys", "issue", "operator", "--name", OPERATOR, "--hours", "1",
         "--data-dir", os.environ["SDK_DATA_DIR"]],
        check=True, capture_output=True, text=True,
    )
    made = {}

    def channel(who):
        if who not in made:
            if who is None:
                made[who] = grpc.insecure_channel(ADDR)
            else:
                ca, cert, key = (open(p, "rb").read() for p in files(who))
                creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
                made[who] = grpc.secure_channel(ADDR, creds)
        return made[who]

    yield channel
    for ch in made.values():
        ch.close()


@pytest.fixture(scope="session")
def channel(mesh):
    """The edge's channel: the RPCs with HTTP routes answer to it."""
    return mesh("edge")


def call(channel, method, request, response, identity=None):
    """Calls `method` and returns the error it answers with (the test expects one)."""
    stub = channel.unary_unary(
        method, request_serializer=request.__class__.SerializeToString, response_deserializer=response.FromString
    )
    metadata = [("x-skillup-identity", identity)] if identity else None
    with pytest.raises(grpc.RpcError) as failed:
        stub(request, metadata=metadata, timeout=10)
    return failed.value


def assertion(subject, scopes):
    """An identity assertion signed with the running `up`'s key (as operators mint one)."""
    return subprocess.run(
        [os.environ["SDK_BINARY"], "admin", "assertion", "--data-dir", os.environ["SDK_DATA_DIR"],
         "--subject", subject, "--scopes", scopes],
        check=True, capture_output=True, text=True,
    ).stdout.strip()


def rich(pb, err, code):
    """The error's `google.rpc.Status` as grpcio-status reads it, checked against the status:
    returns our detail and the standard messages by name."""
    assert err.code() == code, err.details()
    status = rpc_status.from_call(err)  # raises if code or message differ from the status's
    assert status is not None, "grpc-status-details-bin is a google.rpc.Status"
    assert status.code == code.value[0] and status.message == err.details()
    found = {}
    for any_ in status.details:
        for name, cls in (
            ("ours", pb.common.ErrorDetail),
            ("info", error_details_pb2.ErrorInfo),
            ("bad", error_details_pb2.BadRequest),
            ("retry", error_details_pb2.RetryInfo),
        ):
            if any_.Is(cls.DESCRIPTOR):
                found[name] = cls()
                any_.Unpack(found[name])
    ours = found["ours"]
    assert ours.message == err.details()
    assert found["info"].domain == "skillup"
    assert found["info"].reason == pb.common.ErrorCode.Name(ours.code)
    return found


def grpcurl(method, body, identity=None, who="edge"):
    if who is None:
        args = [os.environ["SDK_GRPCURL"], "-plaintext", "-d", body]
    else:
        ca, cert, key = files(who)
        args = [os.environ["SDK_GRPCURL"], "-cacert", ca, "-cert", cert, "-key", key, "-d", body]
    if identity:
        args += ["-H", f"x-skillup-identity: {identity}"]
    done = subprocess.run(args + [ADDR, method], capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    return done.stdout + done.stderr


def test_a_bad_token_is_unauthenticated(pb, channel):
    err = call(channel, "/skillup.auth.v1.AuthService/ValidateToken",
               pb.auth.ValidateTokenRequest(token="not-a-token"), pb.auth.ValidateTokenResponse)
    found = rich(pb, err, grpc.StatusCode.UNAUTHENTICATED)
    assert "bad" not in found and "retry" not in found
    out = grpcurl("skillup.auth.v1.AuthService/ValidateToken", '{"token": "not-a-token"}')
    assert "Code: Unauthenticated" in out, out
    assert '"reason":"UNAUTHENTICATED"' in out.replace(" ", ""), "grpcurl reads google.rpc.ErrorInfo"


def test_a_bad_field_is_named_in_bad_request(pb, channel):
    err = call(channel, "/skillup.auth.v1.AuthService/Register",
               pb.auth.RegisterRequest(email="not-an-address", password="correct horse battery"),
               pb.auth.RegisterResponse)
    found = rich(pb, err, grpc.StatusCode.INVALID_ARGUMENT)
    assert found["ours"].field == "email"
    [violation] = found["bad"].field_violations
    assert violation.field == "email" and violation.description == err.details()
    out = grpcurl("skillup.auth.v1.AuthService/Register", '{"email": "x", "password": "correct horse battery"}')
    assert "Code: InvalidArgument" in out and "google.rpc.BadRequest" in out, out


def test_an_unknown_transaction_is_not_found(pb, mesh):
    ask = pb.payment.RefundRequest(transaction_id=str(uuid.uuid4()), amount_minor=100, idempotency_key="k")
    err = call(mesh("operator"), "/skillup.payment.v1.PaymentService/Refund", ask, pb.payment.Transaction)
    rich(pb, err, grpc.StatusCode.NOT_FOUND)
    out = grpcurl("skillup.payment.v1.PaymentService/Refund",
                  f'{{"transaction_id": "{uuid.uuid4()}", "amount_minor": 1, "idempotency_key": "k"}}', who="operator")
    assert "Code: NotFound" in out, out


def test_a_charge_the_balance_does_not_cover_is_a_failed_precondition(pb, mesh):
    ask = pb.payment.ChargeRequest(user_id=str(uuid.uuid4()), idempotency_key="k",
                                   amount=pb.common.Money(amount_minor=500, currency="RUB"))
    err = call(mesh("subscribe"), "/skillup.payment.v1.PaymentService/Charge", ask, pb.payment.Transaction)
    found = rich(pb, err, grpc.StatusCode.FAILED_PRECONDITION)
    assert found["info"].reason == "INSUFFICIENT_FUNDS"


@pytest.mark.parametrize("who, code", [(None, grpc.StatusCode.UNAUTHENTICATED),
                                       ("edge", grpc.StatusCode.PERMISSION_DENIED),
                                       ("ai", grpc.StatusCode.PERMISSION_DENIED),
                                       ("operator", grpc.StatusCode.PERMISSION_DENIED)])
def test_only_subscribe_may_charge(pb, mesh, who, code):
    """The attack this issue opened with: anyone reaching the port could move money."""
    ask = pb.payment.ChargeRequest(user_id=str(uuid.uuid4()), idempotency_key="k",
                                   amount=pb.common.Money(amount_minor=500, currency="RUB"))
    err = call(mesh(who), "/skillup.payment.v1.PaymentService/Charge", ask, pb.payment.Transaction)
    found = rich(pb, err, code)
    assert found["info"].reason == code.name
    out = grpcurl("skillup.payment.v1.PaymentService/Charge",
                  '{"user_id": "x", "idempotency_key": "k", "amount": {"amount_minor": 1, "currency": "RUB"}}', who=who)
    assert ("Code: Unauthenticated" if who is None else "Code: PermissionDenied") in out, out


def test_admin_only_is_unauthenticated_without_identity_and_denied_to_a_user(pb, channel):
    ask = pb.auth.SetUserActiveRequest(user_id=str(uuid.uuid4()), active=False)
    method = "/skillup.auth.v1.AuthService/SetUserActive"
    # (The edge may call it; without a person's identity it is still refused.)
    rich(pb, call(channel, method, ask, pb.auth.User), grpc.StatusCode.UNAUTHENTICATED)
    user = assertion(str(uuid.uuid4()), "user")
    rich(pb, call(channel, method, ask, pb.auth.User, identity=user), grpc.StatusCode.PERMISSION_DENIED)
    out = grpcurl("skillup.auth.v1.AuthService/SetUserActive", '{"user_id": "x"}', identity=user)
    assert "Code: PermissionDenied" in out, out


def test_a_reused_idempotency_key_is_already_exists(pb, channel):
    who = assertion(str(uuid.uuid4()), "user")
    stub = channel.unary_unary("/skillup.payment.v1.PaymentService/TopUp",
                               request_serializer=pb.payment.TopUpRequest.SerializeToString,
                               response_deserializer=pb.payment.Transaction.FromString)
    stub(pb.payment.TopUpRequest(amount_minor=100, currency="RUB", idempotency_key="same"),
         metadata=[("x-skillup-identity", who)], timeout=10)
    err = call(channel, "/skillup.payment.v1.PaymentService/TopUp",
               pb.payment.TopUpRequest(amount_minor=200, currency="RUB", idempotency_key="same"),
               pb.payment.Transaction, identity=who)
    found = rich(pb, err, grpc.StatusCode.ALREADY_EXISTS)
    assert found["info"].reason == "IDEMPOTENCY_KEY_REUSED"


def test_repeated_failed_sign_ins_are_throttled_with_retry_info(pb, channel):
    email = f"grpc-{uuid.uuid4().hex}@example.com"
    register = channel.unary_unary("/skillup.auth.v1.AuthService/Register",
                                   request_serializer=pb.auth.RegisterRequest.SerializeToString,
                                   response_deserializer=pb.auth.RegisterResponse.FromString)
    register(pb.auth.RegisterRequest(email=email, password="correct horse battery"), timeout=10)
    wrong = pb.auth.LoginRequest(email=email, password="wrong horse battery")
    method = "/skillup.auth.v1.AuthService/Login"
    codes = [call(channel, method, wrong, pb.auth.AuthResponse).code() for _ in range(5)]
    assert codes == [grpc.StatusCode.UNAUTHENTICATED] * 5
    err = call(channel, method, wrong, pb.auth.AuthResponse)
    found = rich(pb, err, grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert found["retry"].retry_delay.seconds > 0
    assert found["retry"].retry_delay.seconds == found["ours"].retry_after_seconds
