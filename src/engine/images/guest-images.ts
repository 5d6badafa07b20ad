import type { StatePaths } from '../../common/state-dir.js';
import { ensureBaseImage } from './base.js';
import type { BuildOptions } from './cache.js';
import type { GuestImages, OfficialGuest, OfficialPacks } from './official.js';
import { ensureRecipeImage, isPackagedRecipe, recipeImageKey, type Recipe } from './recipe.js';

/**
 * Where a guest's images come from: an official pack where one is pinned and fits, else a local
 * build. Memoised per engine: checking the cache hashes the agent sources, busybox and asks gcc its
 * version, which every boot and snapshot would otherwise repeat.
 */
export class GuestImageSource {
  private base: Promise<GuestImages> | undefined;
  private readonly officials = new Map<string, Promise<OfficialGuest | undefined>>();
  /** Why an official pack is not used, by name: told when the local build starts. */
  private readonly fallbacks = new Map<string, string>();

  constructor(
    private readonly paths: StatePaths,
    private readonly officialPacks: OfficialPacks | undefined,
  ) {}

  /** Kernel + base initramfs, built on first use and reused from the cache after. */
  buildBase(options: BuildOptions = {}): Promise<GuestImages> {
    if (options.lookupOnly) return this.resolveBase(options);
    this.base ??= this.resolveBase(options).catch((err: unknown) => {
      this.base = undefined; // a failed build is retried by the next caller
      throw err;
    });
    return this.base;
  }

  /** The base images: the official pack's where one is pinned (unless FORKD_KERNEL names a kernel), else built here. */
  private async resolveBase(options: BuildOptions): Promise<GuestImages> {
    const official = process.env.FORKD_KERNEL ? undefined : await this.official('base', options);
    return official?.images ?? ensureBaseImage(this.paths, this.announcing('base', options));
  }

  /** A recipe's root filesystem: its official pack's where one is pinned and fits the recipe, else built here. */
  async recipeImage(
    recipe: Recipe,
    build: BuildOptions = {},
  ): Promise<{ image: string; reused: boolean; official?: string }> {
    const official = await this.officialRecipe(recipe, build);
    if (official?.images.rootfs) return { image: official.images.rootfs.image, reused: true, official: official.ref };
    const built = await this.buildRecipeImage(recipe, build);
    return { image: built.image, reused: built.reused };
  }

  /** A recipe's root filesystem built here (telling first why no official pack is used). */
  buildRecipeImage(recipe: Recipe, build: BuildOptions = {}): ReturnType<typeof ensureRecipeImage> {
    return ensureRecipeImage(this.paths, recipe, this.announcing(recipe.name, build));
  }

  /**
   * The official images of a packaged recipe, when its pack's root filesystem is the one this
   * recipe builds (a recipe changed since the release, or another Debian mirror, builds locally).
   */
  async officialRecipe(recipe: Recipe, build: BuildOptions): Promise<OfficialGuest | undefined> {
    if (!isPackagedRecipe(recipe) || recipe.base !== 'debian-bookworm') return undefined;
    const official = await this.official(recipe.name, build);
    if (!official || official.images.rootfs?.hash === (await recipeImageKey(recipe))) return official;
    this.fallbacks.set(recipe.name, `${official.ref} holds another build of the recipe: building locally`);
    return undefined;
  }

  /** `options`, telling first why `name` is built here (see official) once a build really reports progress. */
  private announcing(name: string, options: BuildOptions): BuildOptions {
    const why = this.fallbacks.get(name);
    const { onProgress } = options;
    if (!why || !onProgress) return options;
    let told = false;
    return {
      ...options,
      onProgress: (event) => {
        if (!told) onProgress({ task: 'official pack', phase: name, detail: why });
        told = true;
        onProgress(event);
      },
    };
  }

  /** The official images of `name`, installed on first use by the engine's OfficialPacks; memoised. */
  private official(name: string, options: BuildOptions = {}): Promise<OfficialGuest | undefined> {
    const packs = this.officialPacks;
    if (!packs) return Promise.resolve(undefined);
    const lookup = { ...options, onFallback: (notice: string) => this.fallbacks.set(name, notice) };
    if (options.lookupOnly) return packs.guest(name, lookup);
    let guest = this.officials.get(name);
    if (!guest) {
      guest = packs.guest(name, lookup);
      this.officials.set(name, guest);
      guest.catch(() => this.officials.delete(name));
    }
    return guest;
  }
}
