// The build goes straight into the server crate, which embeds it (include_str!), so a plain
// `cargo build` needs no Node. File names are fixed (no content hashes): the server knows them,
// and serves them with `Cache-Control: no-cache`.
import { defineConfig } from "vite";

export default defineConfig({
  base: "/admin/",
  build: {
    outDir: "../../crates/server/assets/admin",
    emptyOutDir: true,
    assetsInlineLimit: 0,
    modulePreload: false,
    rollupOptions: {
      output: {
        entryFileNames: "assets/app.js",
        chunkFileNames: "assets/[name].js",
        assetFileNames: "assets/[name][extname]",
      },
    },
  },
});
