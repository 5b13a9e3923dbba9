import assert from "node:assert/strict";
import fc from "fast-check";
import { type Decimal, parseDecimal as d, toDb, toJson } from "../trading/money.ts";
import {
  applyFill,
  canTransition,
  IllegalTransitionError,
  isOpen,
  isTerminal,
  newOrderState,
  ORDER_STATUSES,
  type OrderEvent,
  type OrderState,
  type OrderStatus,
  OverfillError,
  remainingQty,
  transition,
} from "../trading/order_state.ts";

const pending = newOrderState(d("10"));
const submitted = transition(pending, { type: "submit", broker_order_id: "B1" });
const partial = transition(submitted, { type: "fill", qty: d("4"), price: d("100") });
const ORDERS: Record<OrderStatus, OrderState> = {
  pending,
  submitted,
  partially_filled: partial,
  filled: transition(submitted, { type: "fill", qty: d("10"), price: d("100") }),
  cancelled: transition(submitted, { type: "cancel", reason: "user" }),
  rejected: transition(pending, { type: "reject", reason: "risk" }),
  expired: transition(partial, { type: "expire" }),
};

type EventName = "submit" | "fill_part" | "fill_rest" | "cancel" | "reject" | "expire";
const EVENT_NAMES: EventName[] = ["submit", "fill_part", "fill_rest", "cancel", "reject", "expire"];

function eventFor(name: EventName, order: OrderState): OrderEvent {
  const remaining = remainingQty(order);
  switch (name) {
    case "submit":
      return { type: "submit" };
    case "fill_part":
      return { type: "fill", qty: d("1"), price: d("50") };
    case "fill_rest":
      return { type: "fill", qty: remaining.gt(0) ? remaining : d("1"), price: d("50") };
    case "cancel":
      return { type: "cancel", reason: "c" };
    case "reject":
      return { type: "reject", reason: "r" };
    case "expire":
      return { type: "expire" };
  }
}

// The lifecycle, written out independently of ORDER_TRANSITIONS: the status
// each event leads to, or [null, target] when the move is illegal. A fill's
// target depends on what it leaves: partially_filled, or filled when nothing
// remains (a fill on a filled order targets filled).
const EXPECTED: Record<OrderStatus, Record<EventName, OrderStatus | [null, OrderStatus]>> = {
  pending: {
    submit: "submitted",
    fill_part: [null, "partially_filled"],
    fill_rest: [null, "filled"],
    cancel: "cancelled",
    reject: "rejected",
    expire: [null, "expired"],
  },
  submitted: {
    submit: [null, "submitted"],
    fill_part: "partially_filled",
    fill_rest: "filled",
    cancel: "cancelled",
    reject: "rejected",
    expire: "expired",
  },
  partially_filled: {
    submit: [null, "submitted"],
    fill_part: "partially_filled",
    fill_rest: "filled",
    cancel: "cancelled",
    reject: [null, "rejected"],
    expire: "expired",
  },
  filled: {
    submit: [null, "submitted"],
    fill_part: [null, "filled"],
    fill_rest: [null, "filled"],
    cancel: [null, "cancelled"],
    reject: [null, "rejected"],
    expire: [null, "expired"],
  },
  cancelled: {
    submit: [null, "submitted"],
    fill_part: [null, "partially_filled"],
    fill_rest: [null, "filled"],
    cancel: [null, "cancelled"],
    reject: [null, "rejected"],
    expire: [null, "expired"],
  },
  rejected: {
    submit: [null, "submitted"],
    fill_part: [null, "partially_filled"],
    fill_rest: [null, "filled"],
    cancel: [null, "cancelled"],
    reject: [null, "rejected"],
    expire: [null, "expired"],
  },
  expired: {
    submit: [null, "submitted"],
    fill_part: [null, "partially_filled"],
    fill_rest: [null, "filled"],
    cancel: [null, "cancelled"],
    reject: [null, "rejected"],
    expire: [null, "expired"],
  },
};

Deno.test("every legal transition is taken and every illegal one refused, naming from and to", () => {
  let legal = 0;
  let illegal = 0;
  for (const status of ORDER_STATUSES) {
    const order = ORDERS[status];
    assert.equal(order.status, status);
    for (const name of EVENT_NAMES) {
      const expected = EXPECTED[status][name];
      const event = eventFor(name, order);
      if (typeof expected === "string") {
        const next = transition(order, event);
        assert.equal(next.status, expected, `${status} --${name}-->`);
        assert.equal(order.status, status, "the order itself is not changed");
        legal++;
      } else {
        const to = expected[1];
        assert.throws(
          () => transition(order, event),
          (error: unknown) => {
            assert.ok(error instanceof IllegalTransitionError, `${status} --${name}--> ${error}`);
            assert.equal(error.name, "IllegalTransitionError");
            assert.equal(error.from, status);
            assert.equal(error.to, to);
            assert.equal(error.message, `Illegal order transition from ${status} to ${to}`);
            return true;
          },
        );
        illegal++;
      }
    }
  }
  assert.equal(legal, 12);
  assert.equal(illegal, 7 * 6 - 12);
});

Deno.test("canTransition, isTerminal and isOpen agree with the lifecycle", () => {
  const legal = new Set([
    "pending>submitted",
    "pending>rejected",
    "pending>cancelled",
    "submitted>partially_filled",
    "submitted>filled",
    "submitted>cancelled",
    "submitted>rejected",
    "submitted>expired",
    "partially_filled>partially_filled",
    "partially_filled>filled",
    "partially_filled>cancelled",
    "partially_filled>expired",
  ]);
  for (const from of ORDER_STATUSES) {
    for (const to of ORDER_STATUSES) {
      assert.equal(canTransition(from, to), legal.has(`${from}>${to}`), `${from} → ${to}`);
    }
  }
  assert.deepEqual(ORDER_STATUSES.filter(isTerminal), [
    "filled",
    "cancelled",
    "rejected",
    "expired",
  ]);
  assert.deepEqual(ORDER_STATUSES.filter(isOpen), ["pending", "submitted", "partially_filled"]);
});

Deno.test("submit records the broker order id; reject, cancel and expire record reasons", () => {
  assert.equal(submitted.broker_order_id, "B1");
  assert.equal(transition(pending, { type: "submit" }).broker_order_id, null);
  assert.equal(ORDERS.rejected.reason, "risk");
  assert.equal(ORDERS.cancelled.reason, "user");
  assert.equal(ORDERS.expired.reason, null);
  const expired = transition(submitted, { type: "expire", reason: "end of day" });
  assert.equal(expired.reason, "end of day");
  // Fields the state machine does not know pass through.
  const record = { ...pending, id: 7, symbol: "AAPL" };
  const next = transition(record, { type: "submit" });
  assert.equal(next.id, 7);
  assert.equal(next.symbol, "AAPL");
});

Deno.test("fills keep the filled quantity and a volume-weighted average price", () => {
  let order = submitted;
  order = applyFill(order, { qty: d("4"), price: d("100") });
  assert.equal(order.status, "partially_filled");
  assert.equal(toJson(order.filled_qty), "4");
  assert.equal(toJson(order.avg_fill_price!), "100");
  order = applyFill(order, { qty: d("5"), price: d("110") });
  assert.equal(order.status, "partially_filled");
  assert.equal(toJson(order.avg_fill_price!), toJson(d("950").dividedBy(9)));
  order = transition(order, { type: "fill", qty: d("1"), price: d("50") });
  assert.equal(order.status, "filled");
  assert.equal(toJson(order.filled_qty), "10");
  // (4×100 + 5×110 + 1×50) / 10
  assert.equal(toJson(order.avg_fill_price!), "100");
  assert.equal(toJson(remainingQty(order)), "0");
  assert.equal(submitted.avg_fill_price, null, "the original order is not changed");
});

Deno.test("the average of an order held with its stored (rounded) average does not drift", () => {
  // What the engine holds between batches is the row: avg_fill_price NUMERIC(20,8).
  const asStored = (order: OrderState): OrderState => ({
    ...order,
    avg_fill_price: d(toDb(order.avg_fill_price!)),
  });
  let order = transition(newOrderState(d("6")), { type: "submit" });
  for (const price of ["1", "1", "2"]) {
    order = asStored(applyFill(order, { qty: d("1"), price: d(price) }));
  }
  assert.equal(toDb(order.avg_fill_price!), "1.33333333");
  order = applyFill(order, { qty: d("3"), price: d("1") });
  // Σ qty × price ÷ Σ qty = 7 ÷ 6 = 1.1666…; re-weighting 1.33333333 gave 1.16666666.
  assert.equal(toDb(order.avg_fill_price!), "1.16666667");
  assert.ok(order.avg_fill_price!.eq(d("7").dividedBy(6)));
  assert.equal(toJson(order.filled_notional), "7");
});

Deno.test("an overfill is refused and the order left unchanged", () => {
  assert.throws(
    () => applyFill(submitted, { qty: d("10.00000001"), price: d("1") }),
    OverfillError,
  );
  assert.throws(
    () => applyFill(partial, { qty: d("7"), price: d("1") }),
    (error: unknown) => {
      assert.ok(error instanceof OverfillError);
      assert.equal(error.name, "OverfillError");
      assert.equal(toJson(error.qty), "10");
      assert.equal(toJson(error.filled_qty), "4");
      assert.equal(toJson(error.fill_qty), "7");
      assert.match(error.message, /a fill of 7 on an order of 10 with 4 already filled/);
      return true;
    },
  );
  assert.equal(toJson(partial.filled_qty), "4");
  // Exactly the remainder is fine.
  assert.equal(applyFill(partial, { qty: d("6"), price: d("1") }).status, "filled");
});

Deno.test("fills and orders refuse non-positive quantities and prices", () => {
  assert.throws(() => applyFill(submitted, { qty: d("0"), price: d("1") }), RangeError);
  assert.throws(() => applyFill(submitted, { qty: d("-1"), price: d("1") }), RangeError);
  assert.throws(() => applyFill(submitted, { qty: d("1"), price: d("0") }), RangeError);
  assert.throws(() => newOrderState(d("0")), RangeError);
  assert.throws(() => newOrderState(d("-5")), RangeError);
});

Deno.test("random fill sequences sum to the order and average by volume", () => {
  const cents = fc.integer({ min: 1, max: 10_000_000 });
  fc.assert(fc.property(
    fc.array(fc.tuple(fc.integer({ min: 1, max: 1_000_000 }), cents), {
      minLength: 1,
      maxLength: 30,
    }),
    (fills) => {
      const parts = fills.map(([qty, price]) => ({
        qty: d(qty).dividedBy(1000),
        price: d(price).dividedBy(100),
      }));
      const total = parts.reduce((sum, part) => sum.plus(part.qty), d(0));
      let order: OrderState = transition(newOrderState(total), { type: "submit" });
      let notional: Decimal = d(0);
      parts.forEach((part, i) => {
        order = applyFill(order, part);
        notional = notional.plus(part.qty.times(part.price));
        assert.equal(order.status, i === parts.length - 1 ? "filled" : "partially_filled");
      });
      assert.ok(order.filled_qty.eq(total));
      const exact = notional.dividedBy(total);
      assert.ok(order.avg_fill_price!.minus(exact).abs().lt("1e-25"));
      assert.throws(
        () => applyFill(order, { qty: d("0.001"), price: d("1") }),
        IllegalTransitionError,
      );
    },
  ));
});
