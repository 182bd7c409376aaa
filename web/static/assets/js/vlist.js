// A virtualised list: fixed-height rows, only the visible ones (plus a margin) exist in the
// DOM, recycled as the list scrolls, so 10,000 or 1,000,000 rows cost the same to show. It is
// a keyboard-operable listbox: arrows, Page Up/Down, Home/End move the selection.

import { h } from './dom.js';

const OVERSCAN = 8;

export class VirtualList {
  /**
   * @param {object} o
   * @param {number} o.rowHeight pixels; must match the CSS row height
   * @param {(row: HTMLElement, index: number) => void} o.renderRow fills a recycled row
   * @param {(index: number) => void} o.onSelect
   * @param {string} o.label accessible name
   * @param {string=} o.idPrefix ids of rows for aria-activedescendant
   */
  constructor(o) {
    this.o = o;
    this.count = 0;
    this.selected = -1;
    this.follow = true;
    this.rows = [];
    this.spacer = h('div', { class: 'vlist-spacer' });
    this.el = h('div', {
      class: 'vlist', role: 'listbox', tabindex: '0', 'aria-label': o.label,
    }, this.spacer);
    this.idPrefix = o.idPrefix ?? 'vrow';
    this.frame = 0;
    this.el.addEventListener('scroll', () => {
      const atBottom = this.el.scrollTop + this.el.clientHeight >= this.el.scrollHeight - this.o.rowHeight;
      this.follow = atBottom;
      this.schedule();
    }, { passive: true });
    this.el.addEventListener('keydown', (e) => this.onKey(e));
    this.el.addEventListener('click', (e) => {
      const row = /** @type {HTMLElement} */ (e.target).closest('.vrow');
      if (row && row.dataset.index) this.select(Number(row.dataset.index), false);
    });
    this.resize = new ResizeObserver(() => this.schedule());
    this.resize.observe(this.el);
  }

  /** destroy stops observing. */
  destroy() {
    this.resize.disconnect();
    cancelAnimationFrame(this.frame);
  }

  /**
   * setCount changes the number of rows; with follow on (the view was at the bottom) it
   * stays at the bottom as rows arrive. keepSelection false means the list was rebuilt
   * (filters changed): the selection is dropped and every row redrawn.
   */
  setCount(n, { keepSelection = true } = {}) {
    this.count = n;
    if (!keepSelection) {
      // The rows now stand for different items: redraw every one.
      this.selected = -1;
      for (const r of this.rows) r.dataset.index = '';
    }
    if (this.selected >= n) this.selected = -1;
    this.spacer.style.height = `${n * this.o.rowHeight}px`;
    this.el.setAttribute('aria-rowcount', String(n));
    if (this.follow) this.el.scrollTop = this.el.scrollHeight;
    this.render();
  }

  /** refresh redraws visible rows (their data changed). */
  refresh() {
    for (const r of this.rows) r.dataset.index = '';
    this.render();
  }

  schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.render();
    });
  }

  render() {
    const rh = this.o.rowHeight;
    const height = this.el.clientHeight || rh * 20;
    const first = Math.max(Math.floor(this.el.scrollTop / rh) - OVERSCAN, 0);
    const last = Math.min(Math.ceil((this.el.scrollTop + height) / rh) + OVERSCAN, this.count);
    const need = Math.max(last - first, 0);
    while (this.rows.length < need) {
      const row = h('div', { class: 'vrow', role: 'option' });
      this.rows.push(row);
      this.el.appendChild(row);
    }
    for (let i = 0; i < this.rows.length; i++) {
      const row = this.rows[i];
      const idx = first + i;
      if (i >= need) {
        row.hidden = true;
        row.dataset.index = '';
        continue;
      }
      row.hidden = false;
      row.style.transform = `translateY(${idx * rh}px)`;
      const sel = idx === this.selected;
      row.setAttribute('aria-selected', String(sel));
      row.classList.toggle('selected', sel);
      row.setAttribute('aria-posinset', String(idx + 1));
      row.setAttribute('aria-setsize', String(this.count));
      row.id = `${this.idPrefix}-${idx}`;
      if (row.dataset.index !== String(idx)) {
        row.dataset.index = String(idx);
        this.o.renderRow(row, idx);
      }
    }
    if (this.selected >= 0) this.el.setAttribute('aria-activedescendant', `${this.idPrefix}-${this.selected}`);
    else this.el.removeAttribute('aria-activedescendant');
  }

  /** renderedRows is how many row elements are in the DOM (tests check it stays small). */
  renderedRows() {
    return this.rows.filter((r) => !r.hidden).length;
  }

  /** scrollToIndex brings a row into view. */
  scrollToIndex(i) {
    const rh = this.o.rowHeight;
    const top = i * rh;
    if (top < this.el.scrollTop) this.el.scrollTop = top;
    else if (top + rh > this.el.scrollTop + this.el.clientHeight) this.el.scrollTop = top + rh - this.el.clientHeight;
    this.follow = false;
    this.render();
  }

  /** select marks row i selected and tells the owner. */
  select(i, scroll = true) {
    if (i < 0 || i >= this.count) return;
    this.selected = i;
    if (scroll) this.scrollToIndex(i);
    else this.render();
    this.o.onSelect(i);
  }

  onKey(e) {
    const page = Math.max(Math.floor(this.el.clientHeight / this.o.rowHeight) - 1, 1);
    let i = this.selected;
    switch (e.key) {
      case 'ArrowDown': i = i < 0 ? 0 : i + 1; break;
      case 'ArrowUp': i = i < 0 ? this.count - 1 : i - 1; break;
      case 'PageDown': i = Math.max(i, 0) + page; break;
      case 'PageUp': i = Math.max(i, 0) - page; break;
      case 'Home': i = 0; break;
      case 'End': i = this.count - 1; this.follow = true; break;
      default: return;
    }
    e.preventDefault();
    i = Math.min(Math.max(i, 0), this.count - 1);
    this.select(i);
  }
}
