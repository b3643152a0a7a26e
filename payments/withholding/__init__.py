"""Batch withholding (代扣): agreements that let the bank debit a payer's account, debit files of the orders with
channel "withholding", the bank's signed result files applied to those orders. docs/bank-gateway.md has the files'
byte-exact contract."""
