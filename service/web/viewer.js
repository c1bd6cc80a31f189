// A self-contained 3D molecule viewer on a 2D canvas: ball-and-stick, perspective projection, painter's
// algorithm (every atom and half-bond drawn far to near). Drag to rotate, wheel to zoom; arrow keys
// rotate and +/- zoom when the canvas has focus. No dependencies, no network.
//
//   const viewer = new MoleculeViewer(canvas);
//   viewer.show({ elements: ["C", "O", ...], positions: [[x, y, z], ...], bonds: [[i, j, order], ...] });

"use strict";

// CPK / Jmol colours and covalent radii (Å) of the elements a conformer may hold.
const ELEMENTS = {
  H: { color: "#ffffff", radius: 0.31 },
  B: { color: "#ffb5b5", radius: 0.84 },
  C: { color: "#909090", radius: 0.76 },
  N: { color: "#3050f8", radius: 0.71 },
  O: { color: "#ff0d0d", radius: 0.66 },
  F: { color: "#90e050", radius: 0.57 },
  Si: { color: "#f0c8a0", radius: 1.11 },
  P: { color: "#ff8000", radius: 1.07 },
  S: { color: "#ffff30", radius: 1.05 },
  Cl: { color: "#1ff01f", radius: 1.02 },
  Br: { color: "#a62929", radius: 1.2 },
  I: { color: "#940094", radius: 1.39 },
};
const UNKNOWN = { color: "#ff1493", radius: 0.8 };

const BALL_SCALE = 0.45; // drawn ball radius = covalent radius × this (Å)
const STICK_WIDTH = 0.16; // Å
const CAMERA_DISTANCE = 4; // in units of the molecule's radius
const ZOOM_LIMITS = [0.3, 6];

function elementStyle(symbol) {
  return ELEMENTS[symbol] || UNKNOWN;
}

// 3×3 rotation matrices as flat row-major arrays.
function matmul(a, b) {
  const out = new Array(9);
  for (let i = 0; i < 3; i++) {
    for (let j = 0; j < 3; j++) {
      out[3 * i + j] = a[3 * i] * b[j] + a[3 * i + 1] * b[3 + j] + a[3 * i + 2] * b[6 + j];
    }
  }
  return out;
}

function axisRotation(axis, angle) {
  const [x, y, z] = axis;
  const c = Math.cos(angle);
  const s = Math.sin(angle);
  const t = 1 - c;
  return [
    t * x * x + c, t * x * y - s * z, t * x * z + s * y,
    t * x * y + s * z, t * y * y + c, t * y * z - s * x,
    t * x * z - s * y, t * y * z + s * x, t * z * z + c,
  ];
}

// Bonds guessed from covalent radii, for structures that come without a bond list.
function guessBonds(elements, positions) {
  const bonds = [];
  for (let i = 0; i < positions.length; i++) {
    for (let j = i + 1; j < positions.length; j++) {
      const d = Math.hypot(...positions[i].map((v, k) => v - positions[j][k]));
      if (d < 1.2 * (elementStyle(elements[i]).radius + elementStyle(elements[j]).radius)) {
        bonds.push([i, j, 1]);
      }
    }
  }
  return bonds;
}

// Bonds as [i, j, order] from [i, j], [i, j, order] or {begin, end, order} (0-based atom indices).
function normalizeBonds(bonds) {
  return bonds.map((b) => (Array.isArray(b) ? [b[0], b[1], b[2] || 1] : [b.begin, b.end, b.order || 1]));
}

// The atoms and bonds of the first record of an MDL mol block / SDF (V2000).
function parseMolBlock(text) {
  const lines = text.split(/\r?\n/);
  const counts = lines[3] || "";
  const numAtoms = parseInt(counts.slice(0, 3), 10);
  const numBonds = parseInt(counts.slice(3, 6), 10);
  if (!(numAtoms > 0) || !(numBonds >= 0)) {
    throw new Error("not an MDL mol block");
  }
  const elements = [];
  const positions = [];
  for (let k = 0; k < numAtoms; k++) {
    const line = lines[4 + k];
    positions.push([0, 10, 20].map((o) => parseFloat(line.slice(o, o + 10))));
    elements.push(line.slice(31, 34).trim());
  }
  const bonds = [];
  for (let k = 0; k < numBonds; k++) {
    const line = lines[4 + numAtoms + k];
    bonds.push([parseInt(line.slice(0, 3), 10) - 1, parseInt(line.slice(3, 6), 10) - 1, parseInt(line.slice(6, 9), 10)]);
  }
  return { elements, positions, bonds };
}

class MoleculeViewer {
  constructor(canvas) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.rotation = [1, 0, 0, 0, 1, 0, 0, 0, 1];
    this.zoom = 1;
    this.structure = null;
    this.drag = null;
    this.bindEvents();
    new ResizeObserver(() => this.draw()).observe(canvas);
  }

  // Show a structure; the view (rotation, zoom) is kept so that conformers can be compared.
  show(structure) {
    const { elements, positions } = structure;
    const bonds = structure.bonds ? normalizeBonds(structure.bonds) : guessBonds(elements, positions);
    const n = positions.length;
    const center = [0, 1, 2].map((k) => positions.reduce((s, p) => s + p[k], 0) / n);
    const centered = positions.map((p) => p.map((v, k) => v - center[k]));
    const radius = Math.max(1.5, ...centered.map((p) => Math.hypot(...p))) + 0.3;
    this.structure = { elements, positions: centered, bonds, radius };
    this.draw();
  }

  clear() {
    this.structure = null;
    this.draw();
  }

  resetView() {
    this.rotation = [1, 0, 0, 0, 1, 0, 0, 0, 1];
    this.zoom = 1;
    this.draw();
  }

  rotate(dx, dy) {
    // a drag of dx pixels turns the molecule about the screen's y axis, dy about its x axis
    const angle = Math.hypot(dx, dy) * 0.01;
    if (angle === 0) return;
    const axis = [dy / Math.hypot(dx, dy), dx / Math.hypot(dx, dy), 0];
    this.rotation = matmul(axisRotation(axis, angle), this.rotation);
    this.draw();
  }

  zoomBy(factor) {
    this.zoom = Math.min(ZOOM_LIMITS[1], Math.max(ZOOM_LIMITS[0], this.zoom * factor));
    this.draw();
  }

  bindEvents() {
    const c = this.canvas;
    c.addEventListener("pointerdown", (e) => {
      this.drag = { x: e.clientX, y: e.clientY };
      c.setPointerCapture(e.pointerId);
    });
    c.addEventListener("pointermove", (e) => {
      if (!this.drag) return;
      this.rotate(e.clientX - this.drag.x, e.clientY - this.drag.y);
      this.drag = { x: e.clientX, y: e.clientY };
    });
    const end = () => {
      this.drag = null;
    };
    c.addEventListener("pointerup", end);
    c.addEventListener("pointercancel", end);
    c.addEventListener(
      "wheel",
      (e) => {
        e.preventDefault();
        this.zoomBy(Math.exp(-e.deltaY * 0.001));
      },
      { passive: false },
    );
    c.addEventListener("keydown", (e) => {
      const step = 15;
      const keys = {
        ArrowLeft: () => this.rotate(-step, 0),
        ArrowRight: () => this.rotate(step, 0),
        ArrowUp: () => this.rotate(0, -step),
        ArrowDown: () => this.rotate(0, step),
        "+": () => this.zoomBy(1.15),
        "=": () => this.zoomBy(1.15),
        "-": () => this.zoomBy(1 / 1.15),
        0: () => this.resetView(),
      };
      if (keys[e.key]) {
        e.preventDefault();
        keys[e.key]();
      }
    });
  }

  // Fit the backing store to the displayed size (crisp on high-DPI screens).
  fitCanvas() {
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(this.canvas.clientWidth * ratio));
    const height = Math.max(1, Math.round(this.canvas.clientHeight * ratio));
    if (this.canvas.width !== width || this.canvas.height !== height) {
      this.canvas.width = width;
      this.canvas.height = height;
    }
    return { width, height };
  }

  draw() {
    const { width, height } = this.fitCanvas();
    const ctx = this.ctx;
    ctx.clearRect(0, 0, width, height);
    if (!this.structure) return;
    const { elements, positions, bonds, radius } = this.structure;
    const R = this.rotation;
    const camera = CAMERA_DISTANCE * radius;
    // an atom at distance r from the centre projects to at most ~1.03 r at this camera distance
    const pixelsPerAngstrom = (0.48 * Math.min(width, height) * this.zoom) / radius;
    // rotate, then project: z points to the viewer, screen y points down
    const atoms = positions.map(([x, y, z], i) => {
      const rx = R[0] * x + R[1] * y + R[2] * z;
      const ry = R[3] * x + R[4] * y + R[5] * z;
      const rz = R[6] * x + R[7] * y + R[8] * z;
      const f = camera / (camera - rz);
      return {
        x: width / 2 + rx * f * pixelsPerAngstrom,
        y: height / 2 - ry * f * pixelsPerAngstrom,
        z: rz,
        scale: f * pixelsPerAngstrom,
        style: elementStyle(elements[i]),
      };
    });
    const items = atoms.map((a) => ({ z: a.z, paint: () => this.paintAtom(a) }));
    for (const [i, j, order] of bonds) {
      const a = atoms[i];
      const b = atoms[j];
      const mid = { x: (a.x + b.x) / 2, y: (a.y + b.y) / 2 };
      const length = Math.hypot(b.x - a.x, b.y - a.y) || 1;
      const normal = { x: (a.y - b.y) / length, y: (b.x - a.x) / length }; // one side for both halves
      // each half takes its atom's colour and sits behind that atom's ball
      items.push({ z: (3 * a.z + b.z) / 4 - 1e-3, paint: () => this.paintStick(a, mid, normal, order, a.style.color) });
      items.push({ z: (a.z + 3 * b.z) / 4 - 1e-3, paint: () => this.paintStick(b, mid, normal, order, b.style.color) });
    }
    items.sort((p, q) => p.z - q.z);
    for (const item of items) item.paint();
  }

  // A half-bond as one, two or three sticks; aromatic (order 1.5) as a stick and a dashed one.
  paintStick(from, to, normal, order, color) {
    const ctx = this.ctx;
    const width = STICK_WIDTH * from.scale;
    const { x: nx, y: ny } = normal;
    const aromatic = order > 1 && order < 2;
    const lines = aromatic ? 2 : Math.min(Math.max(Math.round(order), 1), 3);
    const gap = lines === 1 ? 0 : 1.6 * width;
    ctx.lineCap = "round";
    for (let k = 0; k < lines; k++) {
      const offset = (k - (lines - 1) / 2) * gap;
      const w = lines === 1 ? width : width * 0.6;
      ctx.setLineDash(aromatic && k === 1 ? [w * 1.5, w * 1.5] : []);
      ctx.beginPath();
      ctx.moveTo(from.x + nx * offset, from.y + ny * offset);
      ctx.lineTo(to.x + nx * offset, to.y + ny * offset);
      ctx.strokeStyle = "#333";
      ctx.lineWidth = w + 2;
      ctx.stroke();
      ctx.strokeStyle = color;
      ctx.lineWidth = w;
      ctx.stroke();
    }
    ctx.setLineDash([]);
  }

  paintAtom(atom) {
    const ctx = this.ctx;
    const r = atom.style.radius * BALL_SCALE * atom.scale;
    const gradient = ctx.createRadialGradient(atom.x - r / 3, atom.y - r / 3, r / 8, atom.x, atom.y, r);
    gradient.addColorStop(0, "#ffffff");
    gradient.addColorStop(0.35, atom.style.color);
    gradient.addColorStop(1, shade(atom.style.color, 0.45));
    ctx.beginPath();
    ctx.arc(atom.x, atom.y, r, 0, 2 * Math.PI);
    ctx.fillStyle = gradient;
    ctx.fill();
    ctx.lineWidth = 1;
    ctx.strokeStyle = "rgba(0, 0, 0, 0.55)";
    ctx.stroke();
  }
}

// A colour darkened towards black by `amount` (0..1).
function shade(hex, amount) {
  const v = parseInt(hex.slice(1), 16);
  const channel = (shift) => Math.round(((v >> shift) & 255) * (1 - amount));
  return `rgb(${channel(16)}, ${channel(8)}, ${channel(0)})`;
}

window.MoleculeViewer = MoleculeViewer;
window.parseMolBlock = parseMolBlock;
