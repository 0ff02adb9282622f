/*! pincapi demo shop: a cart in localStorage, the last order in sessionStorage, and the Tag calls a theme would make. */
window.shop = (function (window, document) {
  'use strict';
  var CART = 'pincapi_demo_cart';
  var ORDER = 'pincapi_demo_order';

  function read(storage, key, fallback) {
    try {
      return JSON.parse(storage.getItem(key)) || fallback;
    } catch (e) {
      return fallback;
    }
  }

  function cart() {
    return read(window.localStorage, CART, []);
  }

  function money(n) {
    return (Math.round(n * 100) / 100).toFixed(2);
  }

  function lineItems(items) {
    return items.map(function (i) {
      return {
        product_id: i.id,
        product_name: i.name,
        product_category: i.category,
        product_brand: i.brand,
        product_price: Number(i.price),
        product_quantity: i.qty
      };
    });
  }

  function add(product) {
    var items = cart();
    var line = items.filter(function (i) { return i.id === product.id; })[0];
    if (line) line.qty += 1;
    else items.push({ id: product.id, name: product.name, category: product.category, brand: product.brand, price: product.price, qty: 1 });
    window.localStorage.setItem(CART, JSON.stringify(items));
    var one = { id: product.id, name: product.name, category: product.category, brand: product.brand, price: product.price, qty: 1 };
    window.pincapi('track', 'add_to_cart', {
      value: Number(product.price), currency: 'USD', order_quantity: 1, line_items: lineItems([one])
    });
    var added = document.getElementById('added');
    if (added) added.textContent = product.name + ' is in your cart.';
  }

  /* The shop's checkout in one step: Shopify would assign the order id and send its webhook. */
  function placeOrder(email) {
    var items = cart();
    if (!items.length) return;
    var total = items.reduce(function (s, i) { return s + Number(i.price) * i.qty; }, 0);
    var id = String(Date.now()) + String(Math.floor(Math.random() * 1000) + 1000).slice(1);
    window.sessionStorage.setItem(ORDER, JSON.stringify({ id: id, email: email, items: items, total: money(total) }));
    window.localStorage.setItem(CART, '[]');
    window.location.href = '/demo/shop/thank-you?order=' + id;
  }

  /* The order the thank-you page is about, if this browser placed it. */
  function order() {
    var o = read(window.sessionStorage, ORDER, null);
    var m = String(window.location.search).match(/[?&]order=(\d+)/);
    return o && m && o.id === m[1] ? o : null;
  }

  function checkoutData(o) {
    return {
      order_id: o.id,
      value: Number(o.total),
      currency: 'USD',
      order_quantity: o.items.reduce(function (s, i) { return s + i.qty; }, 0),
      line_items: lineItems(o.items)
    };
  }

  function text(tag, value) {
    var el = document.createElement(tag);
    el.textContent = value;
    return el;
  }

  function renderCart(el) {
    var items = cart();
    if (!items.length) {
      el.appendChild(text('p', 'Your cart is empty.'));
      return;
    }
    var table = document.createElement('table');
    items.forEach(function (i) {
      var tr = document.createElement('tr');
      tr.appendChild(text('td', i.name));
      tr.appendChild(text('td', '× ' + i.qty));
      tr.appendChild(text('td', '$' + money(i.price * i.qty)));
      table.appendChild(tr);
    });
    el.appendChild(table);
    document.getElementById('checkout').hidden = false;
  }

  function renderThanks(el) {
    var o = order();
    el.appendChild(text('p', o ? 'Order ' + o.id + ': $' + o.total + '. A receipt goes to ' + o.email + '.' : 'No order here.'));
  }

  function renderTagLog() {
    var log = document.getElementById('tag-log');
    if (!log) return;
    var calls = read(window.sessionStorage, 'pincapi_stub_calls', []);
    log.textContent = '';
    calls.slice(-30).forEach(function (c) {
      log.appendChild(text('li', c.page + '  pintrk(' + JSON.stringify([c.method].concat(c.args)).slice(1, -1) + ')'));
    });
  }

  document.addEventListener('DOMContentLoaded', function () {
    var cartEl = document.getElementById('cart');
    if (cartEl) renderCart(cartEl);
    var thanks = document.getElementById('thanks');
    if (thanks) renderThanks(thanks);
    var addButton = document.getElementById('add-to-cart');
    if (addButton) {
      addButton.addEventListener('click', function () {
        add(JSON.parse(addButton.getAttribute('data-product')));
      });
    }
    var form = document.getElementById('checkout');
    if (form) {
      form.addEventListener('submit', function (e) {
        e.preventDefault();
        placeOrder(document.getElementById('email').value);
      });
    }
    renderTagLog();
    window.setInterval(renderTagLog, 1000);
  });

  return { cart: cart, add: add, placeOrder: placeOrder, order: order, checkoutData: checkoutData };
})(window, document);
