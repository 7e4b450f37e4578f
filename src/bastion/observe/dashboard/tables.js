// Tables built from server data with text nodes only: paths, user agents, referrers and
// error texts come from clients and upstreams, so nothing here is ever parsed as HTML.

import { count } from "./format.js";

/** An element with text content and classes; `text` is always inserted as text. */
export function el(tag, { text = null, className = null, data = null } = {}, children = []) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== null && text !== undefined) node.textContent = String(text);
  if (data) for (const [key, value] of Object.entries(data)) node.dataset[key] = String(value);
  for (const child of children) if (child) node.appendChild(child);
  return node;
}

/** A paragraph saying why a section has nothing to show. */
export function emptyState(text) {
  return el("p", { text, className: "empty" });
}

/**
 * Replace the content of `container` by a table, or by `empty` when there are no rows.
 * columns: [{key, label, format?: value -> text, numeric?: bool, cell?: (row) -> Node,
 *            className?: (row) -> string}]
 * Each row carries data-key (the value of `keyOf(row)`), each cell data-col and, for
 * numbers, data-value with the raw figure, so that what is shown can be checked exactly.
 */
export function renderTable(container, { name, columns, rows, keyOf, empty, caption = null,
  limit = 25 }) {
  if (!rows || !rows.length) {
    container.replaceChildren(emptyState(empty));
    return;
  }
  const more = rows.length - limit;
  if (more > 0) rows = rows.slice(0, limit);
  const head = el("thead", {}, [el("tr", {}, columns.map((c) => {
    const th = el("th", { text: c.label, className: c.numeric ? "num" : null });
    th.scope = "col";
    return th;
  }))]);
  const body = el("tbody", {}, rows.map((row) => {
    const tr = el("tr", { data: { key: keyOf(row) } });
    for (const c of columns) {
      const value = row[c.key];
      const td = el("td", { className: c.numeric ? "num" : null, data: { col: c.key } });
      if (c.cell) {
        td.appendChild(c.cell(row));
      } else {
        td.textContent = c.format ? c.format(value, row) : value === null || value === undefined
          ? "–" : String(value);
        if (value === "") td.textContent = "(none)";
      }
      if (typeof value === "number") td.dataset.value = String(value);
      if (c.className) {
        const extra = c.className(row);
        if (extra) td.classList.add(extra);
      }
      if (c.title && typeof value === "string") td.title = value;
      tr.appendChild(td);
    }
    return tr;
  }));
  const table = el("table", { data: { table: name } }, [
    caption ? el("caption", { text: caption }) : null, head, body]);
  container.replaceChildren(table);
  if (more > 0) container.appendChild(el("p", { text: `and ${more} more`, className: "muted" }));
}

/** The columns of a top-K table: the key and its request count (share of the total). */
export function topColumns(label, total, extra = []) {
  return [
    { key: "key", label, title: true },
    { key: "requests", label: "requests", numeric: true, format: count },
    {
      key: "share", label: "share", numeric: true,
      format: (_v, row) => (total > 0 ? `${Math.round((row.requests / total) * 1000) / 10} %` : "–"),
    },
    ...extra,
  ];
}
