import grpc
from google.rpc import error_details_pb2

from voltcloud.platform.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from voltcloud.platform.rpc import to_status


def test_validation_error_carries_bad_request_field_violations() -> None:
    error = InvalidArgument.for_fields(
        [FieldViolation("soc_permille", "must be within [0, 1000]"), FieldViolation("vehicle_id", "required")]
    )
    status = to_status(error)
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "soc_permille" in status.message and "vehicle_id" in status.message
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    assert [v.field for v in bad_request.field_violations] == ["soc_permille", "vehicle_id"]


def test_other_errors_map_to_their_codes_without_details() -> None:
    assert to_status(NotFound("station st-1 not found")).code == grpc.StatusCode.NOT_FOUND.value[0]
    status = to_status(FailedPrecondition("order is completed"))
    assert status.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert not status.details
