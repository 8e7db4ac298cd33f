"""asyncpg through pgmux: named prepared statements (asyncpg prepares every query), Describe
before Bind, explicit prepared statements, transactions, many concurrent clients.

Usage: asyncpg_check.py DSN CLIENTS. Exits non-zero on the first wrong result or error."""
import asyncio
import sys

import asyncpg


async def one_client(dsn: str, i: int) -> None:
    conn = await asyncpg.connect(dsn, statement_cache_size=100)
    try:
        await conn.execute("create temp table if not exists scratch(n int)") if i == 0 else None
        for j in range(30):
            assert await conn.fetchval("select $1::int + $2::int", i, j) == i + j
            row = await conn.fetchrow("select $1::text as s, $2::int as n", f"c{i}", j)
            assert (row["s"], row["n"]) == (f"c{i}", j)
            async with conn.transaction():
                assert await conn.fetchval("select count(*) from asyncpg_rows where client = $1", i) == j
                await conn.execute("insert into asyncpg_rows(client, n) values ($1, $2)", i, j)
        stmt = await conn.prepare("select $1::int * 2 as doubled")
        for j in range(10):
            assert await stmt.fetchval(j) == 2 * j
        assert [r["doubled"] for r in await stmt.fetch(21)] == [42]
        await conn.execute("set application_name = 'asyncpg-check'")
        assert await conn.fetchval("show application_name") == "asyncpg-check"
    finally:
        await conn.close()


async def main(dsn: str, clients: int) -> None:
    setup = await asyncpg.connect(dsn)
    await setup.execute("drop table if exists asyncpg_rows; create table asyncpg_rows(client int, n int)")
    await setup.close()
    await asyncio.gather(*(one_client(dsn, i) for i in range(clients)))
    check = await asyncpg.connect(dsn)
    total = await check.fetchval("select count(*) from asyncpg_rows")
    await check.close()
    assert total == clients * 30, total
    print(f"asyncpg ok: {clients} clients, {total} rows")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
