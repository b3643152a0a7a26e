"""The withholding files (docs/bank-gateway.md): our debit file byte-exact, the bank's result file parsed strictly,
every refusal with its line number."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from payments.withholding import files
from payments.withholding.files import DebitFile, DebitLine, FileError, ResultCode, ResultFile, ResultLine

CREATED = datetime(2026, 11, 28, 2, 0, 0, tzinfo=UTC)
DEBIT = DebitFile(
    "M100001",
    "WH20261128AB12",
    CREATED,
    (DebitLine(1, "P1", "AG1", 12000), DebitLine(2, "P2", "AG2", 300)),
)
DEBIT_BYTES = (
    b"WHDEBIT|1|M100001|WH20261128AB12|20261128T020000Z|2|12300\nD|1|P1|AG1|12000\nD|2|P2|AG2|300\nEND|2|12300\n"
)
RESULT = ResultFile(
    "M100001",
    "WH20261128AB12",
    (
        ResultLine(1, "P1", 12000, ResultCode.SUCCESS, "BT1"),
        ResultLine(2, "P2", 300, ResultCode.INSUFFICIENT_FUNDS, ""),
    ),
)
RESULT_BYTES = (
    b"WHRESULT|1|M100001|WH20261128AB12|2|12300\n"
    b"R|1|P1|12000|SUCCESS|BT1\n"
    b"R|2|P2|300|INSUFFICIENT_FUNDS|\n"
    b"END|2|1|12000\n"
)


def test_debit_file_is_byte_exact_and_parses_back() -> None:
    assert files.write_debit(DEBIT) == DEBIT_BYTES
    assert files.parse_debit(DEBIT_BYTES) == DEBIT


def test_result_file_is_byte_exact_and_parses_back() -> None:
    assert files.write_result(RESULT) == RESULT_BYTES
    assert files.parse_result(RESULT_BYTES) == RESULT


def test_every_result_code_parses() -> None:
    for code in ResultCode:
        trade = "BT1" if code is ResultCode.SUCCESS else ""
        result = ResultFile("M1", "B1", (ResultLine(1, "P1", 5, code, trade),))
        assert files.parse_result(files.write_result(result)).lines[0].code is code


@pytest.mark.parametrize(
    ("data", "line_no", "message"),
    [
        (RESULT_BYTES.replace(b"END|2|1|12000", b"END|2|1|12001"), 4, "disagree"),
        (RESULT_BYTES.replace(b"|2|12300", b"|2|12301"), 4, "disagree"),
        (RESULT_BYTES.replace(b"|2|12300", b"|3|12300"), 4, "disagree"),
        (RESULT_BYTES.replace(b"R|2|", b"R|1|"), 3, "sequence"),
        (RESULT_BYTES.replace(b"R|2|", b"R|3|"), 3, "sequence"),
        (RESULT_BYTES.replace(b"INSUFFICIENT_FUNDS|", b"NOT_A_CODE|"), 3, "unknown result code"),
        (RESULT_BYTES.replace(b"INSUFFICIENT_FUNDS|", b"INSUFFICIENT_FUNDS|BT2"), 3, "trade number"),
        (RESULT_BYTES.replace(b"SUCCESS|BT1", b"SUCCESS|"), 2, "trade number"),
        (RESULT_BYTES.replace(b"|12000|", b"|12000.00|"), 2, "amount"),
        (RESULT_BYTES.replace(b"|300|", b"|-300|"), 3, "amount"),
        (RESULT_BYTES.replace(b"|300|", b"|0|"), 3, "amount"),
        (RESULT_BYTES[:-1], 0, "line feed"),
        (RESULT_BYTES.replace(b"WHRESULT", b"WHDEBIT"), 1, "not a WHRESULT"),
        (RESULT_BYTES.replace(b"END|2|1|12000\n", b""), 3, "END"),
        (RESULT_BYTES.replace(b"P2", b"P\xc32"), 3, "ASCII"),
        (RESULT_BYTES.replace(b"P2", b"P\r2"), 3, "control"),
        (b"\n", 1, "header and a trailer"),
    ],
)
def test_bad_result_files(data: bytes, line_no: int, message: str) -> None:
    with pytest.raises(FileError, match=message) as info:
        files.parse_result(data)
    assert info.value.line_no == line_no


@pytest.mark.parametrize(
    ("data", "line_no", "message"),
    [
        (DEBIT_BYTES.replace(b"END|2|12300", b"END|2|12299"), 4, "disagree"),
        (DEBIT_BYTES.replace(b"20261128T020000Z", b"20261328T020000Z"), 1, "date and time"),
        (DEBIT_BYTES.replace(b"D|2|", b"D|2|x|"), 3, "expected"),
        (DEBIT_BYTES.replace(b"|AG2|", b"|A G2|"), 3, "agreement"),
    ],
)
def test_bad_debit_files(data: bytes, line_no: int, message: str) -> None:
    with pytest.raises(FileError, match=message) as info:
        files.parse_debit(data)
    assert info.value.line_no == line_no


def test_writer_refuses_what_the_format_cannot_carry() -> None:
    with pytest.raises(ValueError, match="order number"):
        files.write_debit(DebitFile("M1", "B1", CREATED, (DebitLine(1, "P|1", "AG1", 1),)))
    with pytest.raises(ValueError, match="batch"):
        files.write_debit(DebitFile("M1", "B\n1", CREATED, ()))
